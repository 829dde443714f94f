"""Keep freed memory in the process, so that the next array of the same size costs no page faults.

NumPy takes every array's memory from the C library's ``malloc``. glibc serves a large request
(above a threshold that starts at 128 KB and rises to at most 32 MB) with a fresh ``mmap`` of its
own, and gives it back to the kernel with ``munmap`` as soon as the array is freed. The next array
of that size is fresh memory again: the kernel zeroes every page on its first touch, one page fault
per page. A training step makes and frees many arrays larger than 32 MB (the logits of a
3,000-token batch over an 8,000-word vocabulary are 3,000 x 8,000 x 4 bytes = 96 MB; the soft
cross-entropy of distillation makes several more of that size), so on some machines half of a
quantization-aware step was kernel time spent zeroing pages that the step had just given back.

Two ``mallopt`` settings (glibc's malloc(3) tunables, the same as the environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) keep that memory:

* ``M_MMAP_MAX = 0``: serve every request from the heap, never from a mapping of its own;
* ``M_TRIM_THRESHOLD`` (2 GB) and ``M_TOP_PAD`` (64 MB): do not give the heap's free top back to
  the kernel, and grow the heap 64 MB at a time.

Freed arrays then return to the heap and the next step reuses them. The price: the process keeps
its peak memory until it exits (about 2 GB for the d_model 192 trainings of docs/results.md). The
results are unchanged, bit for bit; only where the bytes live changes. ``minitbt`` commands and
``train.train`` call ``keep_freed_memory()``; ``benchmarks/bench_malloc.py`` measures the gain.
"""
import ctypes
import sys

# malloc.h: the parameter numbers of mallopt(3)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


def _mallopt():
    """glibc's mallopt, or None where there is none (macOS, Windows; musl's always fails)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallopt           # the C library this process already runs on
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def keep_freed_memory() -> bool:
    """Keep freed memory in the heap for the rest of the process (module docstring). Returns True
    when the C library took the settings, False where it has no such settings (nothing changes)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
                and mallopt(M_TOP_PAD, 64 << 20))
