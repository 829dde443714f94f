"""minitbt.malloc.keep_freed_memory: a freed large array's memory is reused without page faults."""
import json
import os
import subprocess
import sys

import pytest

# Make and free a 64 MB array eight times; count the minor page faults of the last seven (the first
# one faults its pages in either way). Huge pages are off so that one fault is one 4 KB page.
CHILD = """
import json, resource, sys
import numpy as np
from minitbt.malloc import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
np.ones(8 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(7):
    np.ones(8 << 20)                      # 8 Mi float64 = 64 MB, written page by page
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode):
    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE="0")
    for var in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"):
        env.pop(var, None)                # the child starts with the C library's own settings
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_keep_freed_memory_reuses_pages():
    kept, default = _faults("keep"), _faults("default")
    if not kept["took"]:
        pytest.skip("this C library has no mallopt settings (not glibc)")
    pages = 7 * (64 << 20) // 4096        # 114,688: every page of every array faulted in afresh
    assert default["faults"] > pages // 2, (
        f"without the settings each 64 MB array should be a fresh mapping ({pages} page faults expected), "
        f"saw {default['faults']}")
    assert kept["faults"] < pages // 100, (
        f"with keep_freed_memory() the freed array's pages should be reused: {kept['faults']} page faults "
        f"for 7 arrays, against {default['faults']} without")
