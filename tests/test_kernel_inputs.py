"""Bad input to the kernels and to what feeds them gets one clear error, never a silent wrong
answer (docs/kernels.md section 9): a K that does not match the packed arrays, a K whose
result could leave int32, empty sign-add products, and the one rule for non-finite input,
on both paths (compiled and NumPy fallback)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kernels import EXAMPLES, PATHS, _matmul, _rng, path  # noqa: F401  (path: the fixture)

from minitbt import kernels as kn
from minitbt.kernels import _checks
from minitbt.quant.activation import BiTElasticBinary, ElasticQuantizer, PerChannelQuantizer
from minitbt.quant.minmax import MinMaxQuantizer, PerTokenAbsMax, SymmetricA8
from minitbt.tensor import Tensor

KS = st.sampled_from([1, 3, 63, 64, 65, 100, 127, 128, 200, 256, 257])


def _popcount_calls(M, K, N, seed, bits=2):
    """Every popcount kernel as (name, fn(K), the exact product), operands packed with K."""
    rng = _rng(seed)
    a01, a_pm, a_t = rng.integers(0, 2, (M, K)), rng.choice([-1, 1], (M, K)), rng.integers(-1, 2, (M, K))
    a_k = rng.integers(0, 2 ** bits, (M, K))
    w_pm, w_t = rng.choice([-1, 1], (N, K)), rng.integers(-1, 2, (N, K))
    ap, at, ak = kn.pack_signs(a_pm), kn.pack_ternary(a_t), kn.pack_bitplanes(a_k, bits)
    ab, wp, wt = kn.pack_bits(a01), kn.pack_signs(w_pm), kn.pack_ternary(w_t)
    return [("gemm_xnor", lambda k: kn.gemm_xnor(ap, wp, k), _matmul(a_pm, w_pm)),
            ("gemm_and_pm1", lambda k: kn.gemm_and_pm1(ab, wp, k), _matmul(a01, w_pm)),
            ("gemm_bitplane", lambda k: kn.gemm_bitplane(ak, wt, k), _matmul(a_k, w_t)),
            ("gemm_bitplane_pm1", lambda k: kn.gemm_bitplane_pm1(ak, wp, k), _matmul(a_k, w_pm)),
            ("gemm_ternary_ternary", lambda k: kn.gemm_ternary_ternary(at, wt, k), _matmul(a_t, w_t))]


# --------------------------------------------------------------------------- K against the arrays

@EXAMPLES
@given(KS, st.integers(-70, 70).filter(bool), st.integers(0, 2**31))
def test_wrong_K_is_refused(path, K, dK, seed):
    """Any K other than the packed one is refused by every popcount kernel: in another word by
    the word count, in the same word by the K the packers record (the zero padding cannot tell
    K = 100 from K = 128, and gemm_xnor's K - 2 popc would be off by the difference)."""
    for name, call, exact in _popcount_calls(2, K, 3, seed):
        np.testing.assert_array_equal(call(K), exact, err_msg=name)
        if K + dK >= 1:
            with pytest.raises(ValueError, match=r"words per row|packed with K="):
                call(K + dK)


def test_wrong_K_in_the_same_word_names_both():
    a, w = kn.pack_signs(np.ones((2, 100))), kn.pack_signs(-np.ones((3, 100)))
    with pytest.raises(ValueError, match=r"a was packed with K=100, but K=128 was passed"):
        kn.gemm_xnor(a, w, 128)                       # before: 128 - 2 * 100 = -72 for -100
    with pytest.raises(ValueError, match="K=66"):
        kn.gemm_xnor(a, w, 66)


def test_packed_K_follows_views_and_plain_arrays_keep_the_old_checks():
    t = kn.pack_ternary(np.ones((3, 100), int))
    assert isinstance(t, kn.PackedBits) and t.K == 100
    assert t[0].K == 100 and t[:, :2].K == 100 and t[0][None].K == 100 and t.copy().K == 100
    assert np.asarray(t).__class__ is np.ndarray and getattr(np.asarray(t), "K", None) is None
    assert t[..., :1].K is None                       # the words cut: K is not carried
    plain_a = np.asarray(kn.pack_signs(np.ones((2, 100))))
    plain_w = np.asarray(kn.pack_signs(np.ones((3, 100))))
    with pytest.raises(ValueError, match="words per row"):     # K past 64 W
        kn.gemm_xnor(plain_a, plain_w, 129)
    bits = kn.pack_bits(np.ones((2, 100)))
    with pytest.raises(ValueError, match="padding"):           # K below a set bit
        kn.gemm_and_pm1(np.asarray(bits), plain_w, 99)


# --------------------------------------------------------------------------- the int32 range

@pytest.mark.parametrize("term, limit", [(1, 2**31 - 1), (3, 715827882), (255, 8421504),
                                         (128, 16777215)])
def test_int32_limit(term, limit):
    """K <= (2^31 - 1) // term: at the limit term * K still fits int32, one more does not."""
    assert term * limit <= 2**31 - 1 < term * (limit + 1)
    _checks._check_int32(limit, term)
    with pytest.raises(ValueError, match=rf"K={limit + 1} .*\|result\| <= {term} \* K needs K <= {limit}"):
        _checks._check_int32(limit + 1, term)


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_every_integer_kernel_checks_the_int32_range(path, monkeypatch, bits):
    """With the int32 maximum lowered to 1000, each public integer kernel takes K up to
    1000 // term and refuses one more: it calls the shared check with its own term."""
    monkeypatch.setattr(_checks, "INT32_MAX", 1000)
    terms = {"gemm_xnor": 1, "gemm_and_pm1": 1, "gemm_ternary_ternary": 1,
             "gemm_bitplane": 2 ** bits - 1, "gemm_bitplane_pm1": 2 ** bits - 1}
    for name, term in terms.items():
        K = 1000 // term
        call, exact = {n: (c, e) for n, c, e in _popcount_calls(1, K, 2, K, bits)}[name]
        np.testing.assert_array_equal(call(K), exact, err_msg=name)
        call = {n: c for n, c, _ in _popcount_calls(1, K + 1, 2, K, bits)}[name]
        with pytest.raises(ValueError, match=f"K={K + 1} is too large"):
            call(K + 1)
    w = np.ones((2, 7), int)
    np.testing.assert_array_equal(kn.gemm_ternary_int8(np.full((3, 7), -128, np.int8),
                                                       kn.prepare_ternary_int8(w)), 7 * -128)
    with pytest.raises(ValueError, match="K=8 is too large.* 128 \\* K needs K <= 7"):
        kn.gemm_ternary_int8(np.zeros((1, 8), np.int8), kn.prepare_ternary_int8(np.ones((2, 8), int)))


def test_bitplane_exact_at_the_int32_limit(path):
    """The real limit of 8-bit planes, K = 8 421 504 (8 MB of planes): all codes 255 against all
    +1 / -1 weights give +-255 K = +-2 147 483 520 exactly; one more K is refused (before:
    K = 2^24 + 64 returned -16 760 896 for 4 278 206 400)."""
    for K, ok in ((8421504, True), (8421505, False)):
        ones = kn.pack_bits(np.ones((1, K), bool))
        zero = np.zeros_like(np.asarray(ones))
        planes = np.ascontiguousarray(np.broadcast_to(ones, (8, 1, ones.shape[1])))
        calls = [(lambda: kn.gemm_bitplane(planes, np.stack([ones, zero]), K), 255 * K),
                 (lambda: kn.gemm_bitplane(planes, np.stack([zero, ones]), K), -255 * K),
                 (lambda: kn.gemm_bitplane_pm1(planes, np.asarray(ones), K), -255 * K)]
        for call, exact in calls:
            if ok:
                assert call()[0, 0] == exact
            else:
                with pytest.raises(ValueError, match="K <= 8421504"):
                    call()


# --------------------------------------------------------------------------- sign-add: empty products

@EXAMPLES
@given(KS, st.integers(0, 2**31))
def test_signadd_empty_and_single_rows(path, K, seed):
    """N = 0 and M = 0 give empty results, M = 1 the product, on the kernel and the reference
    (before: the reference failed to reshape the indices at N = 0)."""
    rng = _rng(seed)
    x = rng.standard_normal((1, K)).astype(np.float32)
    w = rng.integers(-1, 2, (5, K))
    none = kn.prepare_signadd(np.zeros((0, K), int))
    for out in (kn.gemm_signadd_f32(x, none), kn.gemm_signadd_f32_ref(x, none)):
        assert out.shape == (1, 0) and out.dtype == np.float32
    assert kn.gemv_ternary_f32(x[0], none).shape == (0,)
    prep = kn.prepare_signadd(w)
    for out in (kn.gemm_signadd_f32(x[:0], prep), kn.gemm_signadd_f32_ref(x[:0], prep)):
        assert out.shape == (0, 5)
    tol = 1e-6 * np.abs(x).astype(np.float64).sum() + 1e-6
    one_row = [kn.gemm_signadd_f32(x, prep), kn.gemm_signadd_f32_ref(x, prep), kn.gemv_ternary_f32(x[0], prep)]
    for out in one_row:
        assert np.all(np.abs(out - _matmul(x, w)) <= tol)


# --------------------------------------------------------------------------- non-finite input

BAD = [np.nan, np.inf, -np.inf]
NON_FINITE = r"x has non-finite values \(NaN, inf or -inf\): 1 of \d+, the first at index \(1, 2\)"


def _with(bad, shape=(3, 20), dtype=np.float32, seed=0):
    x = _rng(seed).standard_normal(shape).astype(dtype)
    x[1, 2] = bad
    return x


@pytest.mark.parametrize("bad", BAD)
def test_signadd_refuses_non_finite(path, bad):
    """The kernel, the reference and the GEMV refuse alike (before: the kernel gave inf/NaN in
    the rows that used the value and the right sums elsewhere, the reference NaN everywhere)."""
    prep = kn.prepare_signadd(_rng(1).integers(-1, 2, (9, 20)))
    x = _with(bad)
    for call in (kn.gemm_signadd_f32, kn.gemm_signadd_f32_ref):
        with pytest.raises(ValueError, match=NON_FINITE):
            call(x, prep)
    with pytest.raises(ValueError, match=r"x has non-finite.*index \(0, 2\)"):
        kn.gemv_ternary_f32(x[1], prep)


@pytest.mark.parametrize("bad", BAD)
def test_packers_refuse_non_finite_floats(bad):
    x = _with(bad)
    with pytest.raises(ValueError, match=NON_FINITE):
        kn.pack_signs(x)
    with pytest.raises(ValueError, match="bits has non-finite"):
        kn.pack_bits(x)
    np.testing.assert_array_equal(kn.unpack_bits(kn.pack_signs(np.nan_to_num(x)), 20), np.nan_to_num(x) < 0)


def _quantizers():
    """Every activation quantizer, initialised (so codes() and the fast levels are comparable)."""
    return [SymmetricA8(), PerTokenAbsMax(), MinMaxQuantizer(4), MinMaxQuantizer(2, signed=False),
            MinMaxQuantizer(1), ElasticQuantizer(2, init_scale=0.5), ElasticQuantizer(1, init_scale=0.5),
            ElasticQuantizer(2, signed=False, init_scale=0.5), BiTElasticBinary(init_scale=0.5),
            PerChannelQuantizer(20, bits=4, init_scale=0.1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", BAD)
def test_activation_quantizer_paths_refuse_non_finite_alike(path, bad, dtype):
    """codes() (with its compiled fast path where it has one), the fake-quant forward's codes
    and the int8 quantizer kernel give one answer on NaN, inf and -inf: the same ValueError
    (before, PerTokenAbsMax on a NaN: codes from an invalid cast, NaN levels, and other codes
    from the C; on inf: zero codes, and a NaN level). On finite input they still agree."""
    x, clean = _with(bad, dtype=dtype), _with(0.5, dtype=dtype)
    for q in _quantizers():
        with pytest.raises(ValueError, match=NON_FINITE):
            q.codes(x)
        np.testing.assert_array_equal(q.codes(clean).dequantize(), q(Tensor(clean)).data)
    if dtype == np.float32:
        with pytest.raises(ValueError, match=NON_FINITE):
            kn.quantize_rows_i8(x, 127, 2.5)


def test_compiled_quantizer_is_reached_and_refuses():
    """On the compiled path SymmetricA8.codes does run the compiled int8 quantizer."""
    if not kn.HAVE_EXT:
        pytest.skip("needs the compiled kernels")
    calls, core = [], kn._core

    class Spy:                                   # the compiled module, counting quantize_rows_i8 calls
        def __getattr__(self, name):
            return getattr(core, name)

        def quantize_rows_i8(self, *args):
            calls.append(1)
            return core.quantize_rows_i8(*args)
    try:
        kn._core = Spy()
        SymmetricA8().codes(_with(0.5))
    finally:
        kn._core = core
    assert calls
    with pytest.raises(ValueError, match=NON_FINITE):
        SymmetricA8().codes(_with(np.nan))


def test_training_forward_lets_nan_through():
    """The rule covers codes, not the fake-quant training forward: there a NaN reaches the
    loss (which the training loop checks), at no cost per step."""
    y = SymmetricA8()(Tensor(_with(np.nan))).data
    assert np.isnan(y).any()
