"""Forward and gradient parity with PyTorch (float64, tight tolerances), and AdamW's update."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as tF  # noqa: E402

import minitbt as mt  # noqa: E402
from minitbt import Tensor, nn  # noqa: E402
from minitbt import functional as F  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-12)


def pair(rng, shape, lo=-2.0, hi=2.0):
    a = rng.uniform(lo, hi, shape)
    return Tensor(a.copy(), requires_grad=True), torch.tensor(a, requires_grad=True)


def check(mine: Tensor, theirs, inputs, seed=0):
    """Same output; then the same gradients for a random upstream gradient."""
    np.testing.assert_allclose(mine.data, theirs.detach().numpy(), **TOL)
    G = np.random.default_rng(seed).standard_normal(mine.shape)
    mine.backward(G) if mine.data.size > 1 else mine.backward()
    if theirs.numel() > 1:
        theirs.backward(torch.tensor(G))
    else:
        theirs.backward()
    for m, t in inputs:
        np.testing.assert_allclose(m.grad, t.grad.numpy(), **TOL)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax(axis):
    rng = np.random.default_rng(0)
    for mine_fn, torch_fn in [(F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)]:
        (x, tx) = pair(rng, (3, 4, 5), -5, 5)
        check(mine_fn(x, axis), torch_fn(tx, axis), [(x, tx)])


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(affine):
    rng = np.random.default_rng(1)
    x, tx = pair(rng, (2, 3, 6))
    w, tw = pair(rng, (6,))
    b, tb = pair(rng, (6,))
    if affine:
        check(F.layer_norm(x, w, b, 1e-5), tF.layer_norm(tx, (6,), tw, tb, 1e-5), [(x, tx), (w, tw), (b, tb)])
    else:
        check(F.layer_norm(x, eps=1e-5), tF.layer_norm(tx, (6,), eps=1e-5), [(x, tx)])


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25])
def test_cross_entropy(smoothing):
    rng = np.random.default_rng(2)
    z, tz = pair(rng, (7, 5), -4, 4)
    t = rng.integers(0, 5, 7)
    t[[1, 4]] = 0                                                 # ignore_index = 0 (padding)
    mine = F.cross_entropy(z, t, ignore_index=0, label_smoothing=smoothing)
    theirs = tF.cross_entropy(tz, torch.tensor(t), ignore_index=0, label_smoothing=smoothing)
    check(mine, theirs, [(z, tz)])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x, tx = pair(np.random.default_rng(3), (4, 5), -4, 4)
    check(F.gelu(x, approximate), tF.gelu(tx, approximate=approximate), [(x, tx)])


def test_relu_sigmoid_tanh():
    rng = np.random.default_rng(4)
    for mine_fn, torch_fn in [(F.relu, torch.relu), (F.sigmoid, torch.sigmoid), (F.tanh, torch.tanh)]:
        x, tx = pair(rng, (3, 5))
        check(mine_fn(x), torch_fn(tx), [(x, tx)])


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    rng = np.random.default_rng(5)
    x, tx = pair(rng, (2, 3, 4))
    w, tw = pair(rng, (6, 4))
    b, tb = pair(rng, (6,))
    ins = [(x, tx), (w, tw)] + ([(b, tb)] if bias else [])
    check(F.linear(x, w, b if bias else None), tF.linear(tx, tw, tb if bias else None), ins)


def test_matmul_batched_broadcast():
    rng = np.random.default_rng(6)
    a, ta = pair(rng, (2, 1, 3, 4))
    b, tb = pair(rng, (5, 4, 2))
    check(a @ b, ta @ tb, [(a, ta), (b, tb)])


def test_attention_with_masks():
    rng = np.random.default_rng(7)
    q, tq = pair(rng, (2, 3, 4, 8))
    k, tk = pair(rng, (2, 3, 5, 8))
    v, tv = pair(rng, (2, 3, 5, 8))
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    mask = pad[:, None, None, :] | nn.causal_mask(4, 5, offset=1)
    mine = F.scaled_dot_product_attention(q, k, v, mask)
    theirs = tF.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(~mask))  # torch: True = attend
    check(mine, theirs, [(q, tq), (k, tk), (v, tv)])


def test_linear_layernorm_attention_stack():
    """Linear -> LayerNorm -> MultiHeadAttention (self, padding + causal) against torch's own modules."""
    d, H, B, T = 8, 2, 2, 5
    rng = np.random.default_rng(8)
    lin = nn.Linear(6, d, rng=1).to_dtype(np.float64)
    ln = nn.LayerNorm(d).to_dtype(np.float64)
    mha = nn.MultiHeadAttention(d, H, rng=2).to_dtype(np.float64)
    ln.weight.data[:] = rng.uniform(0.5, 1.5, d)
    ln.bias.data[:] = rng.uniform(-0.5, 0.5, d)
    for p in (lin.bias, mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias, mha.out_proj.bias):
        p.data[:] = rng.uniform(-0.5, 0.5, p.data.shape)

    t_lin = torch.nn.Linear(6, d).double()
    t_ln = torch.nn.LayerNorm(d).double()
    t_mha = torch.nn.MultiheadAttention(d, H, batch_first=True).double()
    with torch.no_grad():
        t_lin.weight.copy_(torch.tensor(lin.weight.data))
        t_lin.bias.copy_(torch.tensor(lin.bias.data))
        t_ln.weight.copy_(torch.tensor(ln.weight.data))
        t_ln.bias.copy_(torch.tensor(ln.bias.data))
        t_mha.in_proj_weight.copy_(torch.tensor(np.concatenate(
            [mha.q_proj.weight.data, mha.k_proj.weight.data, mha.v_proj.weight.data])))
        t_mha.in_proj_bias.copy_(torch.tensor(np.concatenate(
            [mha.q_proj.bias.data, mha.k_proj.bias.data, mha.v_proj.bias.data])))
        t_mha.out_proj.weight.copy_(torch.tensor(mha.out_proj.weight.data))
        t_mha.out_proj.bias.copy_(torch.tensor(mha.out_proj.bias.data))

    x, tx = pair(rng, (B, T, 6))
    pad = np.zeros((B, T), bool)
    pad[0, 3:] = True
    h = ln(lin(x))
    mine = mha(h, key_padding_mask=pad, causal=True)
    th = t_ln(t_lin(tx))
    theirs, _ = t_mha(th, th, th, key_padding_mask=torch.tensor(pad),
                      attn_mask=torch.tensor(nn.causal_mask(T, T)), need_weights=False)
    check(mine, theirs, [(x, tx), (lin.weight, t_lin.weight), (ln.weight, t_ln.weight), (ln.bias, t_ln.bias),
                         (mha.out_proj.weight, t_mha.out_proj.weight)])
    in_proj = np.concatenate([mha.q_proj.weight.grad, mha.k_proj.weight.grad, mha.v_proj.weight.grad])
    np.testing.assert_allclose(in_proj, t_mha.in_proj_weight.grad.numpy(), **TOL)
    in_bias = np.concatenate([mha.q_proj.bias.grad, mha.k_proj.bias.grad, mha.v_proj.bias.grad])
    np.testing.assert_allclose(in_bias, t_mha.in_proj_bias.grad.numpy(), **TOL)


@pytest.mark.parametrize("steps", [1, 3])
def test_adamw_matches_torch(steps):
    rng = np.random.default_rng(9)
    w0 = rng.standard_normal((4, 3))
    mine = nn.Parameter(w0.copy())
    theirs = torch.nn.Parameter(torch.tensor(w0))
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    opt = mt.optim.AdamW([mine], **kw)
    t_opt = torch.optim.AdamW([theirs], **kw)
    for _ in range(steps):
        g = rng.standard_normal((4, 3))
        mine.grad = g.copy()
        theirs.grad = torch.tensor(g)
        opt.step()
        t_opt.step()
    np.testing.assert_allclose(mine.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(opt.v[0], t_opt.state[theirs]["exp_avg_sq"].numpy(), rtol=1e-12)
