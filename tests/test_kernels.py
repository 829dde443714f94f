"""Bit kernels: every kernel against its NumPy reference and against a plain float64 matmul
of the unpacked values (which checks the reference too), on every path (the NumPy fallback and
each compiled path: portable C, AVX2, AVX-512), with hypothesis-generated shapes; plus the
input validation."""
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitbt import kernels as kn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_avx512_emu  # noqa: E402  (the developer build of the AVX-512 paths on SIMDe)

# The NumPy fallback, every compiled path (those this CPU lacks are skipped, with the reason),
# and the AVX-512 paths emulated by SIMDe where that developer build exists.
PATHS = ["numpy", "portable", "avx2", "avx512", "avx512-emu"]
_NEEDS = {"avx2": "AVX2", "avx512": "AVX-512 F, BW, VL, VPOPCNTDQ and VNNI"}


def _emulated_core():
    """build/avx512-emu/_core_emu (tests/build_avx512_emu.py), or the reason it cannot run."""
    core = build_avx512_emu.load()
    if core is None:
        return None, ("the AVX-512 paths on SIMDe are a developer build: "
                      "`python tests/build_avx512_emu.py` (needs libsimde-dev)")
    root = os.path.dirname(build_avx512_emu.HERE)
    sources = [os.path.join(root, "minitbt", f) for f in os.listdir(os.path.join(root, "minitbt"))
               if f.endswith(".h") or f == "_core.pyx"]
    if max(map(os.path.getmtime, sources)) > os.path.getmtime(core.__file__):
        return None, "build/avx512-emu is older than the kernel sources: rebuild it"
    return core, ""


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """kn._core is the one switch every kernel reads at call time, and its set_kernel_path picks
    the compiled path. On the NumPy path the compiled functions are also replaced by ones that
    fail, so that a kernel which kept its own reference to the compiled module cannot pass
    these tests on the compiled path."""
    compiled = kn._core
    name = request.param
    if name == "numpy":
        monkeypatch.setattr(kn, "_core", None)
        if compiled is not None:
            for attr in dir(compiled):
                if not attr.startswith("_") and callable(getattr(compiled, attr)):
                    monkeypatch.setattr(compiled, attr, _compiled_was_called(attr))
        return name
    if name == "avx512-emu":
        core, why = _emulated_core()
        if core is None:
            pytest.skip(why)
        monkeypatch.setattr(kn, "_core", core)
        name = "avx512"
    elif compiled is None:
        pytest.skip("minitbt._core is not built")
    elif name not in compiled.COMPILED_PATHS:
        pytest.skip(f"this build has no {name} path (MINITBT_PORTABLE=1, or not x86-64)")
    elif name not in kn.available_paths():
        pytest.skip(f"this CPU has no {_NEEDS[name]} (its best path: {compiled.cpu_path()})")
    before = kn.kernel_path()
    assert kn.set_kernel_path(name) == name == kn.kernel_path()
    request.addfinalizer(lambda: kn._core.set_kernel_path(before))
    return request.param


def _compiled_was_called(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"the NumPy path called the compiled minitbt._core.{name}")
    return fail


# M, K, N: edge sizes (1, K < 64, K not a multiple of 64, K = 64 w + tail) and large K: K not a
# multiple of 256 or 512 (the SIMD tails: 1100 = 2 x 512 + 64 + 12, 1300 = 2 x 512 + 256 + 20)
dims = st.tuples(st.integers(1, 9), st.sampled_from([1, 3, 63, 64, 65, 127, 200, 255, 256, 257,
                                                      300, 511, 513, 767, 1000, 1100, 1300]),
                 st.integers(1, 11))
# the `path` fixture (monkeypatched _core) is meant to hold for all examples of a test
EXAMPLES = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _rng(seed):
    return np.random.default_rng(seed)


def _matmul(a, w):
    """the plain float64 product that every kernel must reproduce"""
    return np.asarray(a, dtype=np.float64) @ np.asarray(w, dtype=np.float64).T


# --------------------------------------------------------------------------- packing

@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_pack_roundtrip_and_padding(shape, seed):
    M, K, _ = shape
    bits = _rng(seed).integers(0, 2, size=(M, K))
    packed = kn.pack_bits(bits)
    assert packed.dtype == np.uint64 and packed.shape == (M, kn.words(K))
    assert packed.flags.c_contiguous
    np.testing.assert_array_equal(kn.unpack_bits(packed, K), bits)
    if K % 64:                                             # padding bits are zero
        assert not np.any(packed[:, -1] >> np.uint64(K % 64))


def test_pack_bit_order():
    bits = np.zeros((1, 70), dtype=int)
    bits[0, [0, 5, 64, 69]] = 1
    packed = kn.pack_bits(bits)
    assert packed[0, 0] == (1 | 1 << 5) and packed[0, 1] == (1 | 1 << 5)


def test_pack_signs_ternary_planes():
    x = np.array([[-2.0, 0.0, 3.0, -0.5]])
    np.testing.assert_array_equal(kn.unpack_bits(kn.pack_signs(x), 4), [[1, 0, 0, 1]])
    plus, minus = kn.pack_ternary(np.array([[1, 0, -1, 1]]))
    np.testing.assert_array_equal(kn.unpack_bits(plus, 4), [[1, 0, 0, 1]])
    np.testing.assert_array_equal(kn.unpack_bits(minus, 4), [[0, 0, 1, 0]])
    planes = kn.pack_bitplanes(np.array([[0, 1, 2, 3]]), 2)
    assert planes.shape == (2, 1, 1)
    np.testing.assert_array_equal(kn.unpack_bits(planes, 4)[:, 0], [[0, 1, 0, 1], [0, 0, 1, 1]])


# --------------------------------------------------------------------------- popcount GEMMs

@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_gemm_xnor(path, shape, seed):
    M, K, N = shape
    rng = _rng(seed)
    a, w = rng.choice([-1, 1], size=(M, K)), rng.choice([-1, 1], size=(N, K))
    ap, wp = kn.pack_signs(a), kn.pack_signs(w)
    out = kn.gemm_xnor(ap, wp, K)
    assert out.dtype == np.int32 and out.shape == (M, N)
    np.testing.assert_array_equal(out, kn.gemm_xnor_ref(ap, wp, K))
    np.testing.assert_array_equal(out, _matmul(a, w))


@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_gemm_and_pm1(path, shape, seed):
    M, K, N = shape
    rng = _rng(seed)
    a, w = rng.integers(0, 2, size=(M, K)), rng.choice([-1, 1], size=(N, K))
    ap, wp = kn.pack_bits(a), kn.pack_signs(w)
    out = kn.gemm_and_pm1(ap, wp, K)
    np.testing.assert_array_equal(out, kn.gemm_and_pm1_ref(ap, wp, K))
    np.testing.assert_array_equal(out, _matmul(a, w))


@EXAMPLES
@given(dims, st.integers(1, 8), st.integers(0, 2**31))
def test_gemm_bitplane(path, shape, bits, seed):
    M, K, N = shape
    rng = _rng(seed)
    a, w = rng.integers(0, 2**bits, size=(M, K)), rng.integers(-1, 2, size=(N, K))
    ap, wt = kn.pack_bitplanes(a, bits), kn.pack_ternary(w)
    out = kn.gemm_bitplane(ap, wt, K)
    np.testing.assert_array_equal(out, kn.gemm_bitplane_ref(ap, wt, K))
    np.testing.assert_array_equal(out, _matmul(a, w))


@EXAMPLES
@given(dims, st.integers(1, 4), st.integers(0, 2**31))
def test_gemm_bitplane_pm1(path, shape, bits, seed):
    M, K, N = shape
    rng = _rng(seed)
    a, w = rng.integers(0, 2**bits, size=(M, K)), rng.choice([-1, 1], size=(N, K))
    ap, wp = kn.pack_bitplanes(a, bits), kn.pack_signs(w)
    out = kn.gemm_bitplane_pm1(ap, wp, K)
    np.testing.assert_array_equal(out, kn.gemm_bitplane_pm1_ref(ap, wp, K))
    np.testing.assert_array_equal(out, _matmul(a, w))


@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_gemm_ternary_ternary(path, shape, seed):
    M, K, N = shape
    rng = _rng(seed)
    a, w = rng.integers(-1, 2, size=(M, K)), rng.integers(-1, 2, size=(N, K))
    at, wt = kn.pack_ternary(a), kn.pack_ternary(w)
    out = kn.gemm_ternary_ternary(at, wt, K)
    np.testing.assert_array_equal(out, kn.gemm_ternary_ternary_ref(at, wt, K))
    np.testing.assert_array_equal(out, _matmul(a, w))


def test_popcount_gemms_all_zero_and_extremes(path):
    M, K, N = 3, 1000, 5
    zeros_a, zeros_w = np.zeros((M, K), int), np.zeros((N, K), int)
    z = kn.pack_bits(zeros_a)
    # all +1 (no sign bits set): a . w = K exactly
    np.testing.assert_array_equal(kn.gemm_xnor(z, kn.pack_bits(zeros_w), K), np.full((M, N), K))
    np.testing.assert_array_equal(kn.gemm_and_pm1(z, kn.pack_bits(zeros_w), K), 0)
    zero_t = kn.pack_ternary(zeros_w)
    np.testing.assert_array_equal(kn.gemm_bitplane(kn.pack_bitplanes(zeros_a, 2), zero_t, K), 0)
    np.testing.assert_array_equal(kn.gemm_ternary_ternary(kn.pack_ternary(zeros_a), zero_t, K), 0)
    # largest 8-bit codes against all -1 weights: every term is -255
    a = np.full((M, K), 255)
    w = -np.ones((N, K), int)
    np.testing.assert_array_equal(
        kn.gemm_bitplane(kn.pack_bitplanes(a, 8), kn.pack_ternary(w), K), np.full((M, N), -255 * K))


def test_large_k_chunking(path):
    """K past the AVX2 byte-counter chunk (31 vectors = 7936 bits) and odd tails."""
    rng = _rng(7)
    M, K, N = 3, 64 * 4 * 33 + 37, 6
    a, w = rng.choice([-1, 1], size=(M, K)), rng.choice([-1, 1], size=(N, K))
    out = kn.gemm_xnor(kn.pack_signs(a), kn.pack_signs(w), K)
    np.testing.assert_array_equal(out, _matmul(a, w))


@pytest.mark.skipif(not (kn.HAVE_EXT and kn._core.HAVE_OPENMP), reason="no OpenMP build")
def test_threads_give_the_same_results(path):
    rng = _rng(3)
    M, K, N = 130, 300, 37                      # > one M block, partial tiles
    a, w = rng.choice([-1, 1], size=(M, K)), rng.integers(-1, 2, size=(N, K))
    ap, wp, wt = kn.pack_signs(a), kn.pack_signs(w * 0 + 1), kn.pack_ternary(w)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(kn.gemm_xnor(ap, wp, K, threads=t),
                                      kn.gemm_xnor_ref(ap, wp, K))
    planes = kn.pack_bitplanes(rng.integers(0, 4, size=(M, K)), 2)
    expect = kn.gemm_bitplane_ref(planes, wt, K)
    np.testing.assert_array_equal(kn.gemm_bitplane(planes, wt, K, threads=2), expect)
    x8 = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
    prep = kn.prepare_ternary_int8(w)
    np.testing.assert_array_equal(kn.gemm_ternary_int8(x8, prep, threads=2), _matmul(x8, w))
    for t in (2, 3):                            # the 2-bit GEMV: threads split the groups of 8 rows
        np.testing.assert_array_equal(kn.gemm_ternary_int8(x8[:1], prep, threads=t),
                                      _matmul(x8[:1], w))
    xf = rng.standard_normal((2, K)).astype(np.float32)
    np.testing.assert_allclose(kn.gemm_signadd_f32(xf, kn.prepare_signadd(w), threads=2),
                               _matmul(xf, w), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------- ternary x int8

@EXAMPLES
@given(dims, st.booleans(), st.integers(0, 2**31))
def test_gemm_ternary_int8(path, shape, binary, seed):
    M, K, N = shape
    rng = _rng(seed)
    w = rng.choice([-1, 1], size=(N, K)) if binary else rng.integers(-1, 2, size=(N, K))
    x = rng.integers(-128, 128, size=(M, K)).astype(np.int8)   # includes -128
    prep = kn.prepare_ternary_int8(w)
    np.testing.assert_array_equal(prep.codes(), w)
    np.testing.assert_array_equal(kn.unpack_i2(prep.w_i2, K)[:N], w)   # the 2-bit layout
    out = kn.gemm_ternary_int8(x, prep)                 # M <= 2: GEMV path, else GEMM path
    assert out.dtype == np.int32 and out.shape == (M, N)
    np.testing.assert_array_equal(out, kn.gemm_ternary_int8_ref(x, prep))
    np.testing.assert_array_equal(out, _matmul(x, w))
    np.testing.assert_array_equal(kn.gemm_ternary_int8(x[:1], prep), _matmul(x[:1], w))


def test_ternary_int8_extremes(path):
    K, N = 4096 + 5, 6                 # long K: int16 accumulators must be folded in time
    w = np.ones((N, K), int)
    w[1::2] = -1
    prep = kn.prepare_ternary_int8(w)
    for value in (-128, 127, 0):
        x = np.full((3, K), value, dtype=np.int8)
        np.testing.assert_array_equal(kn.gemm_ternary_int8(x, prep), _matmul(x, w))
        np.testing.assert_array_equal(kn.gemm_ternary_int8(x[:1], prep), _matmul(x[:1], w))


# --------------------------------------------------------------------------- ternary x float32

@EXAMPLES
@given(dims, st.integers(0, 2**31))
def test_gemm_signadd_f32(path, shape, seed):
    M, K, N = shape
    rng = _rng(seed)
    w = rng.integers(-1, 2, size=(N, K))
    x = rng.standard_normal((M, K)).astype(np.float32)
    prep = kn.prepare_signadd(w)
    np.testing.assert_array_equal(prep.codes(), w)                   # the index layout
    exact = _matmul(x, w)
    tol = 1e-6 * np.abs(x).astype(np.float64).sum(axis=1, keepdims=True) + 1e-6
    out = kn.gemm_signadd_f32(x, prep)
    assert out.dtype == np.float32 and out.shape == (M, N)
    assert np.all(np.abs(out - exact) <= tol)      # float32 sums in another order
    assert np.all(np.abs(kn.gemm_signadd_f32_ref(x, prep) - exact) <= tol)
    np.testing.assert_allclose(kn.gemv_ternary_f32(x[0], prep), out[0], rtol=1e-6, atol=1e-6)


def test_signadd_zero_inputs(path):
    w = _rng(1).integers(-1, 2, size=(9, 40))
    out = kn.gemm_signadd_f32(np.zeros((2, 40), np.float32), kn.prepare_signadd(w))
    np.testing.assert_array_equal(out, 0.0)


# --------------------------------------------------------------------------- validation

def test_validation_errors():
    K = 100
    a = kn.pack_signs(np.ones((2, K)))
    w = kn.pack_signs(np.ones((3, K)))
    with pytest.raises(TypeError, match="dtype uint64"):
        kn.gemm_xnor(a.astype(np.int64), w, K)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        kn.gemm_xnor(a.tolist(), w, K)
    with pytest.raises(ValueError, match="C-contiguous"):
        kn.gemm_xnor(np.asfortranarray(np.zeros((2, 2), np.uint64)), w[:, :2], K)
    with pytest.raises(ValueError, match="words per row"):
        kn.gemm_xnor(a, w, 300)                                     # mismatched K
    with pytest.raises(ValueError, match="words per row"):
        kn.gemm_xnor(a, kn.pack_signs(np.ones((3, 200))), K)
    bad = a.copy()
    bad[0, -1] |= np.uint64(1) << np.uint64(63)                   # a padding bit set
    with pytest.raises(ValueError, match="padding"):
        kn.gemm_xnor(bad, w, K)
    with pytest.raises(ValueError, match="2-D"):
        kn.gemm_xnor(a[None], w, K)
    with pytest.raises(ValueError, match="positive"):
        kn.gemm_xnor(a, w, 0)
    with pytest.raises(ValueError, match="threads"):
        kn.gemm_xnor(a, w, K, threads=0)
    with pytest.raises(ValueError, match=r"\(2, rows, W\)"):
        kn.gemm_bitplane(kn.pack_bitplanes(np.ones((2, K), int), 2), w[None], K)
    with pytest.raises(ValueError, match="1 to 8"):
        kn.gemm_bitplane(np.zeros((9, 2, 2), np.uint64), kn.pack_ternary(np.ones((3, K), int)), K)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        kn.pack_ternary(np.array([[2, 0]]))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        kn.pack_bitplanes(np.array([[4, 0]]), 2)
    with pytest.raises(TypeError, match="integers"):
        kn.prepare_ternary_int8(np.ones((2, 3)) * 0.5)
    prep = kn.prepare_ternary_int8(np.ones((3, K), int))
    with pytest.raises(TypeError, match="int8"):
        kn.gemm_ternary_int8(np.ones((2, K), np.int16), prep)
    with pytest.raises(ValueError, match="K=99"):
        kn.gemm_ternary_int8(np.ones((2, 99), np.int8), prep)
    with pytest.raises(ValueError, match="C-contiguous"):
        kn.gemm_ternary_int8(np.ones((K, 2), np.int8).T, prep)
    with pytest.raises(TypeError, match="prepare_ternary_int8"):
        kn.gemm_ternary_int8(np.ones((2, K), np.int8), np.ones((3, K), np.int8))
    sa = kn.prepare_signadd(np.ones((3, K), int))
    with pytest.raises(TypeError, match="float32"):
        kn.gemm_signadd_f32(np.ones((2, K)), sa)
    with pytest.raises(TypeError, match="prepare_signadd"):
        kn.gemm_signadd_f32(np.ones((2, K), np.float32), prep)


def test_fallback_flag_and_env(monkeypatch):
    """MINITBT_NO_EXT=1 is honoured by the loader, with a reason for the one warning."""
    monkeypatch.setenv("MINITBT_NO_EXT", "1")
    core, why = kn._load_core()
    assert core is None and "MINITBT_NO_EXT" in why
    monkeypatch.delenv("MINITBT_NO_EXT")
    core, why = kn._load_core()
    assert (core is None) == bool(why)          # a module, or None with the reason


@pytest.mark.parametrize("qp,clip", [(127, 2.5), (127, None), (7, None), (1, None)])
def test_quantize_rows_i8(path, qp, clip):
    """The compiled per-row int8 quantizer equals its NumPy reference bit for bit (codes and
    scales), on random shapes (M = 1 and K not a multiple of anything included), zero rows and
    exact ties on the A8 grid; the codes reconstruct min-max quantization."""
    rng = _rng(qp)
    tol = np.float32(256 * np.finfo(np.float32).eps) * np.float32(qp)
    for t in range(100):
        M, K = int(rng.integers(1, 9)), int(rng.integers(1, 300))
        x = (rng.standard_normal((M, K)) * rng.choice([0.01, 1, 3, 100])).astype(np.float32)
        if t % 5 == 0:
            x[0] = 0
        if t % 7 == 0:                                       # exact half-steps of the A8 grid
            x[-1] = np.float32(0.5) * rng.integers(-40, 41, K) * np.float32(2.5 / 127)
        codes, scale = kn.quantize_rows_i8(x, qp, clip, tol)
        ref_codes, ref_scale = kn.quantize_rows_i8_ref(x, qp, clip, tol)
        np.testing.assert_array_equal(codes, ref_codes)
        np.testing.assert_array_equal(scale, ref_scale)
        assert codes.dtype == np.int8 and scale.shape == (M, 1) and np.abs(codes).max() <= qp
    with pytest.raises(ValueError, match="qp"):
        kn.quantize_rows_i8(x, 200)


@pytest.mark.parametrize("mode,lo,qp", [("levels", -1, 1), ("levels", 0, 2), ("levels", 0, 1), ("levels", -7, 7),
                                        ("levels", 0, 255), ("levels", -127, 127), ("plus", -1, 1), ("zero", -1, 1)])
def test_fake_quantize(path, mode, lo, qp):
    """The compiled training forward of a learned-scale quantizer (q, dq/da, inside) equals its
    NumPy reference bit for bit: random shapes (one element, sizes that are not multiples of 8),
    exact and near ties of the rounding (half-integers of u = x/a, one ulp either side), zeros of
    both signs, and NaN and infinities, which stay what NumPy makes of them."""
    rng = _rng(qp - lo)
    for t in range(60):
        shape = tuple(int(d) for d in rng.integers(1, 40, size=int(rng.integers(1, 4))))
        if t == 0:
            shape = (1,)
        a = np.array([rng.uniform(0.01, 3)], dtype=np.float32)
        x = (rng.standard_normal(shape) * rng.choice([0.1, 1, 10, 1000])).astype(np.float32)
        tie = rng.random(shape) < 0.3                        # u exactly on a half-integer, or one ulp off
        x[tie] = (rng.integers(-2 * qp - 2, 2 * qp + 2, int(tie.sum())) + np.float32(0.5)) * a[0]
        near = rng.random(shape) < 0.2
        x[near] = np.nextafter(x[near], rng.choice([-np.inf, np.inf]) * np.ones_like(x[near]))
        special = rng.random(shape) < 0.1
        x[special] = rng.choice(np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30], dtype=np.float32),
                                int(special.sum()))
        with np.errstate(invalid="ignore"):                  # inf - inf in the reference's tie test
            got = kn.fake_quantize(x, a, lo, qp, mode)
            want = kn.fake_quantize_ref(x, a, lo, qp, mode)
        for name, g, w in zip(("q", "dq/da", "inside"), got, want):
            assert g.dtype == w.dtype and g.shape == w.shape == x.shape, name
            assert np.array_equal(g.view(np.uint8), w.view(np.uint8)), f"{name} differs on {path}, shape {shape}"
        q = want[0][np.isfinite(x)]
        assert np.all((q >= lo) & (q <= qp)) and np.array_equal(q, np.rint(q))    # the levels
    x = np.ones((2, 3), dtype=np.float64) / 3                    # float64 runs the reference
    assert kn.fake_quantize(x, np.array([0.5]), lo, qp, mode)[0].dtype == np.float64
    with pytest.raises(ValueError, match="mode"):
        kn.fake_quantize(x, np.array([0.5]), lo, qp, "round")


def test_importing_the_kernels_loads_no_model_code():
    """minitbt.kernels stands alone: importing it loads neither the model (nn) nor the quantizers."""
    import subprocess
    import sys
    code = "import sys, minitbt.kernels; print(' '.join(m for m in sys.modules if m.startswith('minitbt')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "minitbt.kernels" in loaded
    assert not [m for m in loaded if m.startswith(("minitbt.nn", "minitbt.quant", "minitbt.packed"))], loaded
