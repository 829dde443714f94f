"""The kernel paths (minitbt/_dispatch.h, kernels/paths.py): the choice at import, the
MINITBT_KERNEL_PATH override, info(), and the paths against each other. Every kernel's
bit-exactness against its reference on every path is in test_kernels.py (the `path` fixture)."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kernels import EXAMPLES, PATHS, _emulated_core, _rng, dims, path  # noqa: F401

from minitbt import kernels as kn

needs_ext = pytest.mark.skipif(not kn.HAVE_EXT, reason="minitbt._core is not built")


def _run(code, **env):
    """minitbt.kernels in a fresh interpreter with `env` set; its stdout and stderr."""
    import os
    e = {k: v for k, v in os.environ.items() if k != "MINITBT_KERNEL_PATH"} | env
    r = subprocess.run([sys.executable, "-c", "import minitbt.kernels as kn; " + code],
                       capture_output=True, text=True, env=e, check=True)
    return r.stdout.strip(), r.stderr


@needs_ext
def test_the_best_path_is_chosen_at_import():
    out, _ = _run("print(kn.kernel_path(), kn._core.cpu_path())")
    now, cpu = out.split()
    assert now == cpu == kn.available_paths()[-1]
    assert kn.available_paths() == list(kn._core.PATHS[:kn._core.PATHS.index(cpu) + 1])


@needs_ext
@pytest.mark.parametrize("want", ["portable", "avx2", "avx512"])
def test_env_lowers_the_path_never_raises_it(want):
    out, _ = _run("print(kn.kernel_path(), kn.info()['kernels']['gemm_xnor']['path'])",
                  MINITBT_KERNEL_PATH=want)
    best = kn.available_paths()
    expect = want if want in best else best[-1]
    assert out.split() == [expect, expect]


@needs_ext
def test_unknown_env_value_is_ignored_with_a_warning():
    out, err = _run("print(kn.kernel_path())", MINITBT_KERNEL_PATH="sse9")
    assert out == kn.available_paths()[-1] and "sse9" in err and "ignored" in err


@needs_ext
def test_info_names_a_path_and_an_instruction_for_every_kernel():
    info = kn.info()
    assert info["path"] == kn.kernel_path() and info["cpu"] == kn.available_paths()[-1]
    for name, k in info["kernels"].items():
        assert k["path"] in info["compiled"] and k["instruction"], name
    with kn.use_path("portable"):
        assert {k["path"] for k in kn.info()["kernels"].values()} == {"portable"}
    assert kn.info() == info


@needs_ext
def test_a_path_the_cpu_lacks_is_refused():
    missing = [p for p in ("portable", "avx2", "avx512") if p not in kn.available_paths()]
    for p in missing:
        with pytest.raises(ValueError, match="not available"):
            kn.set_kernel_path(p)
    with pytest.raises(ValueError):
        kn.set_kernel_path("sse9")


def test_info_without_the_extension(monkeypatch):
    monkeypatch.setattr(kn, "_core", None)
    info = kn.info()
    assert info["path"] == "numpy" and not info["extension"]
    assert kn.kernel_path() == "numpy" and kn.available_paths() == []


@needs_ext
@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_xnor_dot_is_the_equation(shape, seed):
    """The scalar C function the W1A1 equation is written as: K - 2 popc(a XOR w)."""
    _, K, _ = shape
    rng = _rng(seed)
    a, w = rng.choice([-1, 1], size=K), rng.choice([-1, 1], size=K)
    assert kn._core.xnor_dot(kn.pack_signs(a[None])[0], kn.pack_signs(w[None])[0], K) == int(a @ w)


def _all_cores():
    """(label, module, path) for every compiled path that can run here."""
    out = []
    if kn.HAVE_EXT:
        out += [(p, kn._core, p) for p in kn.available_paths()]
    emu, _ = _emulated_core()
    if emu is not None:
        out += [("avx512-emu", emu, "avx512")]
    return out


@needs_ext
@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_signadd_same_bits_on_every_path(shape, seed):
    """Sign-add adds in one order on every path (tbt_signadd_chunk), so every path gives the
    portable C's float32 bits exactly, not just values within rounding of each other."""
    M, K, N = shape
    rng = _rng(seed)
    prep = kn.prepare_signadd(rng.integers(-1, 2, size=(N, K)))
    x = (rng.standard_normal((M, K)) * rng.choice([1e-3, 1, 1e3])).astype(np.float32)
    results = {}
    for label, core, p in _all_cores():
        before = core.kernel_path()
        core.set_kernel_path(p)
        out = np.empty((M, N), np.float32)
        core.signadd_f32(x, prep.idx, N, out, 1)
        core.set_kernel_path(before)
        results[label] = out.view(np.uint32)
    for label, bits in results.items():
        np.testing.assert_array_equal(bits, results["portable"], err_msg=label)
