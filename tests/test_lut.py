"""The binary-coding LUT kernel (kernels.gemm_bcq_lut, minitbt/_lut.h) and the packed "bcq-lut"
layers that run on it.

The kernel's sums are float32; its reference (gemm_bcq_lut_ref) fixes their order, and the
compiled kernel, in its AVX2 and its scalar form, must give the reference's results bit for
bit (compared as uint32 bit patterns, so that even the sign of a zero counts). Against the exact
product (float64) they differ by float32 rounding only, within the bound derived in
_rounding_bound."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kernels import EXAMPLES, PATHS, _rng, path  # noqa: F401  (path: the fixture)
from test_packed import _batch, _models

from minitbt import kernels as kn
from minitbt.kernels.lut import G, BinaryCodingLUTWeights

# K: below, at and past multiples of the group (4), the word (32) and 64, and long rows
KS = st.sampled_from([1, 2, 3, 4, 5, 7, 31, 32, 33, 63, 64, 65, 127, 130, 200, 257, 513, 1000])
SHAPES = st.tuples(st.integers(1, 9), st.integers(1, 19), KS, st.integers(1, 4))   # M, N, K, k
U = 2.0 ** -24                                   # unit roundoff of float32


def _bits(a):
    """float32 values as their bit patterns: equal bits, not just equal values (-0 != +0)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _weights(rng, k, N, K, scale_range=(0.01, 1.0)):
    codes = rng.choice(np.array([-1, 1], dtype=np.int8), size=(k, N, K))
    scale = rng.uniform(*scale_range, size=(k, N, 1)).astype(np.float32)
    return codes, scale


def _exact(x, codes, scale):
    """y = x W^T with W = sum_i a_i b_i, in float64 (the exact value, nearly)."""
    a = scale.astype(np.float64).reshape(codes.shape[0], codes.shape[1], 1)          # (k, N, 1)
    W = (codes.astype(np.float64) * a).sum(axis=0)                                   # (N, K)
    return x.astype(np.float64) @ W.T


def _rounding_bound(x, codes, scale):
    """|float32 result - exact| <= (J + k + 4) u sum_i a_i sum_k |x_k|, J = ceil(K/4):
    a table entry sums 4 inputs (3 roundings), s adds J entries (J roundings), y adds k
    rounded products (2 roundings each); the usual bound of recursive summation."""
    J, k = -(-x.shape[1] // G), codes.shape[0]
    a1 = scale.astype(np.float64).reshape(k, -1).sum(axis=0)                         # (N,)
    x1 = np.abs(x.astype(np.float64)).sum(axis=1, keepdims=True)                      # (M, 1)
    return (J + k + 4) * U * x1 * a1 + 1e-30


def _compiled_scalar(x, w):
    """The scalar C form, called directly (an AVX2 build would otherwise run its AVX2 form)."""
    out = np.empty((x.shape[0], w.N), dtype=np.float32)
    kn._core.bcq_lut_f32(x, w.lut, w.scale, w.N, out, 1, True)
    return out


FORMS = ["avx2_or_scalar", "scalar"] if kn.HAVE_EXT else []


# --------------------------------------------------------------------------- the layout

@EXAMPLES
@given(SHAPES, st.integers(0, 2**31))
def test_prepare_round_trips(shape, seed):
    _, N, K, k = shape
    codes, scale = _weights(_rng(seed), k, N, K)
    w = kn.prepare_bcq_lut(codes, scale)
    J = -(-K // G)
    assert w.lut.dtype == np.uint32 and w.lut.flags.c_contiguous
    assert w.lut.shape == (-(-N // 8), k, -(-J // 8), 8) and w.scale.shape == (k, 8 * -(-N // 8))
    np.testing.assert_array_equal(w.codes(), codes)
    np.testing.assert_array_equal(w.scales(), scale[..., 0])
    neg = np.zeros((k, N, 4 * J), int)
    neg[..., :K] = codes < 0
    np.testing.assert_array_equal(w.patterns(), (neg.reshape(k, N, J, 4) << np.arange(4)).sum(-1))


def test_layout_by_hand():
    """Row 9 (row block 1, lane 1), plane 1, inputs 36..39 (group 9 = word 1, nibble 1):
    signs (-, +, -, -) are the pattern p = 0b1101 = 13; bit 3 is set, so the stored code is
    p ^ 7 = 0b1010: index 2 into the half table, negated (T[13] = -H[2])."""
    codes = np.ones((2, 10, 40), np.int8)
    codes[1, 9, 36:40] = [-1, 1, -1, -1]
    w = kn.prepare_bcq_lut(codes, np.ones((2, 10), np.float32))
    assert w.lut[1, 1, 1, 1] == 0b1010 << 4
    assert np.count_nonzero(w.lut) == 1
    assert w.patterns()[1, 9, 9] == 13
    x = np.arange(1, 41, dtype=np.float32)[None]               # b . x for that row and plane:
    y = kn.gemm_bcq_lut_ref(x, w)                               # sum(x) - 2 (37 + 39 + 40)
    assert y[0, 9] == x.sum() + (x.sum() - 2 * (37 + 39 + 40)) and y[0, 0] == 2 * x.sum()


# --------------------------------------------------------------------------- bit-exactness

@EXAMPLES
@given(SHAPES, st.sampled_from([1e-3, 1.0, 1e4]), st.integers(0, 2**31))
def test_gemm_bcq_lut_bit_exact(path, shape, magnitude, seed):
    """The public kernel (compiled or NumPy path) gives the reference's bits, and both are
    within float32 rounding of the exact product; on the compiled path, the scalar C too."""
    M, N, K, k = shape
    rng = _rng(seed)
    codes, scale = _weights(rng, k, N, K)
    x = (rng.standard_normal((M, K)) * magnitude).astype(np.float32)
    w = kn.prepare_bcq_lut(codes, scale)
    ref = kn.gemm_bcq_lut_ref(x, w)
    out = kn.gemm_bcq_lut(x, w)
    assert out.dtype == np.float32 and out.shape == (M, N)
    np.testing.assert_array_equal(_bits(out), _bits(ref))
    np.testing.assert_array_equal(out, ref)
    if path != "numpy":
        np.testing.assert_array_equal(_bits(_compiled_scalar(x, w)), _bits(ref))
    assert np.all(np.abs(ref - _exact(x, codes, scale)) <= _rounding_bound(x, codes, scale))


@pytest.mark.parametrize("form", FORMS)
def test_many_rows_and_long_K(form):
    """Past the 16-row table block, the 2-row and 4-row-block tiles and their tails, words of
    8 groups with a partial last one, with scales of mixed size and k = 8 planes."""
    rng = _rng(11)
    for M, N, K, k in [(37, 45, 4099, 3), (17, 8, 96, 8), (2, 33, 1001, 2), (5, 1, 33, 1)]:
        codes, scale = _weights(rng, k, N, K, (1e-3, 10.0))
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = kn.prepare_bcq_lut(codes, scale)
        out = kn.gemm_bcq_lut(x, w) if form != "scalar" else _compiled_scalar(x, w)
        np.testing.assert_array_equal(_bits(out), _bits(kn.gemm_bcq_lut_ref(x, w)), err_msg=str((M, N, K, k)))


@pytest.mark.parametrize("form", FORMS)
def test_order_of_the_sums_is_the_reference_order(form):
    """Inputs that make the float32 sum depend on its order: the kernel follows the reference's
    order (groups left to right, then planes), not the exact sum. x = (2^24, 1, 1, 1, -2^24, 1,
    ...): within a group, 2^24 + 1 rounds back to 2^24 (ties to even)."""
    K = 64
    x = np.ones((1, K), np.float32)
    x[0, 0], x[0, 4] = 2.0 ** 24, -(2.0 ** 24)
    codes = np.ones((2, 3, K), np.int8)
    codes[1, 1, 1::2] = -1
    scale = np.array([[1.0, 1.0, 0.5], [3.0, 2.0 ** -30, 1.0]], np.float32)
    w = kn.prepare_bcq_lut(codes, scale)
    ref = kn.gemm_bcq_lut_ref(x, w)
    out = kn.gemm_bcq_lut(x, w) if form != "scalar" else _compiled_scalar(x, w)
    np.testing.assert_array_equal(_bits(out), _bits(ref))
    assert ref[0, 0] != _exact(x, codes, scale)[0, 0]        # the order does show here
    # row 0: ((2^24 + 1) + 1) + 1 = 2^24 in float32, then -2^24 + 1 + 1 + 1, then 56 ones
    assert ref[0, 0] == (0.0 + 3.0 + 56.0) * 1.0 + (0.0 + 3.0 + 56.0) * 3.0


@pytest.mark.parametrize("form", FORMS + ["numpy"])
def test_zero_inputs_give_plus_zero(form, monkeypatch):
    """All-zero activations, all-zero scales, or both: every output is +0.0 (bits 0), on every
    form: the sums start at +0, and +0 + -0 = +0."""
    if form == "numpy":
        monkeypatch.setattr(kn, "_core", None)
    rng = _rng(5)
    codes, scale = _weights(rng, 3, 13, 70)
    x0, x = np.zeros((3, 70), np.float32), rng.standard_normal((3, 70)).astype(np.float32)
    for xx, ss in ((x0, scale), (x, np.zeros_like(scale)), (x0, np.zeros_like(scale))):
        w = kn.prepare_bcq_lut(codes, ss)
        out = kn.gemm_bcq_lut(xx, w) if form != "scalar" else _compiled_scalar(xx, w)
        np.testing.assert_array_equal(_bits(out), 0)


def test_all_plus_and_all_minus_rows(path):
    x = np.array([[0.5, -1.25, 3.0, 2.0, -0.75]], np.float32)
    codes = np.stack([np.ones((2, 5), np.int8), -np.ones((2, 5), np.int8)])          # (2, 2, 5)
    w = kn.prepare_bcq_lut(codes, np.array([[1.0, 2.0], [0.25, 4.0]], np.float32))
    out = kn.gemm_bcq_lut(x, w)
    s = np.float32(((0.5 - 1.25) + 3.0) + 2.0) + np.float32(-0.75)                   # 3.5
    np.testing.assert_array_equal(out, [[s * 1.0 + -s * 0.25, s * 2.0 + -s * 4.0]])


def test_empty_products(path):
    rng = _rng(2)
    codes, scale = _weights(rng, 2, 0, 9)
    x = rng.standard_normal((3, 9)).astype(np.float32)
    for out in (kn.gemm_bcq_lut(x, kn.prepare_bcq_lut(codes, scale)),
                kn.gemm_bcq_lut_ref(x, kn.prepare_bcq_lut(codes, scale))):
        assert out.shape == (3, 0) and out.dtype == np.float32
    codes, scale = _weights(rng, 2, 5, 9)
    w = kn.prepare_bcq_lut(codes, scale)
    for out in (kn.gemm_bcq_lut(x[:0], w), kn.gemm_bcq_lut_ref(x[:0], w)):
        assert out.shape == (0, 5)


@pytest.mark.skipif(not (kn.HAVE_EXT and kn._core.HAVE_OPENMP), reason="no OpenMP build")
def test_threads_give_the_same_bits():
    rng = _rng(3)
    codes, scale = _weights(rng, 3, 70, 300)
    x = rng.standard_normal((19, 300)).astype(np.float32)
    w = kn.prepare_bcq_lut(codes, scale)
    ref = _bits(kn.gemm_bcq_lut_ref(x, w))
    for t in (1, 2, 3):
        np.testing.assert_array_equal(_bits(kn.gemm_bcq_lut(x, w, threads=t)), ref)
        out = np.empty((19, 70), np.float32)
        kn._core.bcq_lut_f32(x, w.lut, w.scale, w.N, out, t, True)
        np.testing.assert_array_equal(_bits(out), ref)


# --------------------------------------------------------------------------- bad input

NON_FINITE = r"x has non-finite values \(NaN, inf or -inf\): 1 of 60, the first at index \(1, 2\)"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(path, bad):
    codes, scale = _weights(_rng(1), 2, 7, 20)
    w = kn.prepare_bcq_lut(codes, scale)
    x = _rng(0).standard_normal((3, 20)).astype(np.float32)
    x[1, 2] = bad
    for call in (kn.gemm_bcq_lut, kn.gemm_bcq_lut_ref):
        with pytest.raises(ValueError, match=NON_FINITE):
            call(x, w)
    bad_scale = scale.copy()
    bad_scale[1, 3] = bad
    with pytest.raises(ValueError, match=r"scale has non-finite values"):
        kn.prepare_bcq_lut(codes, bad_scale)


def test_validation_errors(path):
    codes, scale = _weights(_rng(1), 2, 7, 20)
    w = kn.prepare_bcq_lut(codes, scale)
    x = np.ones((3, 20), np.float32)
    with pytest.raises(TypeError, match="float32"):
        kn.gemm_bcq_lut(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="K=19 columns but the weights have K=20"):
        kn.gemm_bcq_lut(x[:, :19].copy(), w)
    with pytest.raises(ValueError, match="C-contiguous"):
        kn.gemm_bcq_lut(np.ones((20, 3), np.float32).T, w)
    with pytest.raises(ValueError, match="2-D"):
        kn.gemm_bcq_lut(x[0], w)
    with pytest.raises(TypeError, match="prepare_bcq_lut"):
        kn.gemm_bcq_lut(x, kn.prepare_signadd(np.ones((7, 20), int)))
    with pytest.raises(ValueError, match="threads"):
        kn.gemm_bcq_lut(x, w, threads=0)
    with pytest.raises(ValueError, match=r"-1 or \+1"):
        kn.prepare_bcq_lut(np.zeros((2, 7, 20), np.int8), scale)
    with pytest.raises(ValueError, match=r"3-D \(k, N, K\)"):
        kn.prepare_bcq_lut(codes[0], scale[0])
    with pytest.raises(TypeError, match="integers"):
        kn.prepare_bcq_lut(codes.astype(np.float32), scale)
    with pytest.raises(ValueError, match=r"scale must have shape \(k, N\) = \(2, 7\)"):
        kn.prepare_bcq_lut(codes, scale[:, :6])
    with pytest.raises(TypeError, match="float array"):
        kn.prepare_bcq_lut(codes, np.ones((2, 7), int))
    with pytest.raises(ValueError, match="K >= 1"):
        kn.prepare_bcq_lut(np.ones((2, 7, 0), np.int8), scale)
    assert isinstance(w, BinaryCodingLUTWeights) and w.shape == (2, 7, 20)


# --------------------------------------------------------------------------- the packed bcq model

def _bcq_models(dtype=np.float32, seed=0, spec="bcq-3-3-32"):
    return _models(spec, seed, dtype)                       # the packed-model tests' tiny model


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_bcq_model_matches_fake_quant(seed):
    """bcq-3-3-32 (3-bit binary-coding weights, float activations): every linear layer runs the
    LUT kernel, and the packed model equals the fake-quantized one within float32 rounding: the
    sums are the same up to their order (the fake-quant forward adds the planes into W first and
    then multiplies by x; the kernel sums b . x first and then the planes). Tolerance: logits
    within 1e-5 of max|logits| (measured: about 3e-7), greedy tokens identical."""
    from minitbt.decode import greedy
    from minitbt.packed import PackedLinear, kernel_report
    from minitbt.tensor import no_grad
    q, p = _bcq_models(seed=seed)
    assert set(kernel_report(p).values()) == {"bcq-lut"}
    assert all(m.kind == "bcq" for m in p.modules() if isinstance(m, PackedLinear))
    src, tgt = _batch(seed)
    with no_grad():
        ref, out = q(src, tgt).data, p(src, tgt).data
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    assert greedy(q, src, 15) == greedy(p, src, 15)


def test_packed_bcq_layers_within_the_rounding_bound():
    """Layer by layer (float32), PackedLinear(x) against QuantLinear(x), both against the float64
    product of the same codes and scales: each within float32 rounding of it. The fake-quant
    matmul's bound adds (K + k) u sum_i a_i sum|x| for W = sum_i a_i b_i and x . W."""
    from minitbt.packed import PackedLinear
    from minitbt.tensor import Tensor, no_grad
    q, p = _bcq_models()
    qmods = dict(q.named_modules())
    rng = np.random.default_rng(3)
    checked = 0
    for name, pl in p.named_modules():
        if isinstance(pl, PackedLinear):
            ql = qmods[name]
            x = rng.standard_normal((5, 7, pl.in_features)).astype(np.float32)
            pc = ql.weight_codes()
            x2 = x.reshape(-1, pl.in_features)
            exact = _exact(x2, pc.codes, pc.scale) + (0 if ql.bias is None else ql.bias.data)
            bound = _rounding_bound(x2, pc.codes, pc.scale)
            bound_fq = bound + (pl.in_features + pc.codes.shape[0]) * U * \
                np.abs(x2.astype(np.float64)).sum(1, keepdims=True) * pc.scale.astype(np.float64).sum(0)[:, 0]
            with no_grad():
                out = pl(Tensor(x)).data.reshape(exact.shape)
                fq = ql(Tensor(x)).data.reshape(exact.shape)
            bias_ulp = 0 if ql.bias is None else 2 * U * np.abs(exact)          # adding the bias rounds once
            assert np.all(np.abs(out - exact) <= bound + bias_ulp), name
            assert np.all(np.abs(fq - exact) <= bound_fq + bias_ulp), name
            checked += 1
    assert checked == 2 * 6 + 2 * 10                            # encoder 6 linears, decoder 10, 2 layers each


def test_packed_bcq_float64_is_the_fake_quant_model():
    """In float64 (no float64 LUT kernel) the layers run the dequantized weight as a matmul: the
    fake-quant model's own operations, so the logits are identical."""
    from minitbt.tensor import no_grad
    q, p = _bcq_models(np.float64)
    src, tgt = _batch()
    with no_grad():
        np.testing.assert_array_equal(p(src, tgt).data, q(src, tgt).data)


def test_packed_bcq_numpy_path_gives_the_same_bits(monkeypatch):
    """The compiled kernel is bit-exact against its reference, so the packed model gives the same
    logits, bit for bit, with the compiled kernels and with MINITBT_NO_EXT's NumPy path."""
    if not kn.HAVE_EXT:
        pytest.skip("needs the compiled kernels")
    from minitbt.tensor import no_grad
    _, p = _bcq_models()
    src, tgt = _batch()
    with no_grad():
        compiled = p(src, tgt).data
        monkeypatch.setattr(kn, "_core", None)
        numpy_path = p(src, tgt).data
    np.testing.assert_array_equal(_bits(compiled), _bits(numpy_path))


def test_packed_bcq_stores_planes_and_round_trips(tmp_path):
    """The packed bcq layers hold k sign planes (uint64) and k scales per row, no float weight;
    save_packed / load_packed give the same logits."""
    from minitbt.packed import load_packed, save_packed
    from minitbt.tensor import no_grad
    q, p = _bcq_models()
    state = p.state_dict()
    assert not any(n.endswith("w_dense") or n.endswith("fc1.weight") for n in state)
    signs = next(v for n, v in state.items() if n.endswith("fc1.bcq_signs"))
    assert signs.dtype == np.uint64 and signs.shape == (3, 128, 1)          # (k, N, ceil(64/64))
    scales = next(v for n, v in state.items() if n.endswith("fc1.bcq_scale"))
    assert scales.shape == (3, 128) and scales.dtype == np.float32
    save_packed(str(tmp_path / "bcq.npz"), p)
    p2, meta = load_packed(str(tmp_path / "bcq.npz"))
    src, tgt = _batch()
    with no_grad():
        np.testing.assert_array_equal(p(src, tgt).data, p2(src, tgt).data)
    assert meta["quant"]


def test_shipped_model_bcq_packed_greedy_identical_in_float32():
    """The shipped FP translation model, quantized with bcq-3-3-32 and packed: greedy decoding of
    20 test sentences in float32 gives the fake-quantized model's tokens (50 of 50 when measured
    2026-12-01; logits within 5e-7 of max|logits|): with float activations no code can flip,
    so only the order of the float32 sums differs."""
    import os
    from minitbt.data import Seq2SeqData, load_tokenizer
    from minitbt.decode import greedy
    from minitbt.model_io import load_model, quantize
    from minitbt.packed import pack_model
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path, task = os.path.join(root, "models", "ddtp-en-de-fp.npz"), os.path.join(root, "data", "ddtp-en-de")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not shipped")
    fp, _ = load_model(path)
    q = quantize(fp, "bcq-3-3-32").eval()
    data = Seq2SeqData.from_task(task, "test", load_tokenizer(task), max_src_len=48, max_tgt_len=48, limit=20)
    src = data.collate(np.arange(20)).src
    assert greedy(q, src, 40) == greedy(pack_model(q), src, 40)
