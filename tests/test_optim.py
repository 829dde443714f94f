"""Optimizers against hand-computed updates, schedules, gradient clipping, optimizer state."""
import math

import numpy as np
import pytest

import minitbt as mt
from minitbt import optim
from minitbt.nn import Parameter


def params_with_grads(seed=0):
    rng = np.random.default_rng(seed)
    W = Parameter(rng.standard_normal((3, 2)))                   # 2-D: decayed
    b = Parameter(rng.standard_normal(3))                         # 1-D: not decayed
    return W, b, rng


def test_adamw_two_steps_by_hand():
    W, b, rng = params_with_grads()
    lr, b1, b2, eps, wd = 0.1, 0.8, 0.9, 1e-3, 0.5
    opt = optim.AdamW([W, b], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref = {"W": W.data.copy(), "b": b.data.copy()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v = {k: np.zeros_like(x) for k, x in ref.items()}
    for t in (1, 2):
        grads = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(3)}
        W.grad, b.grad = grads["W"].copy(), grads["b"].copy()
        opt.step()
        for k in ref:
            if k == "W":                                          # decoupled decay, 2-D only
                ref[k] = ref[k] - lr * wd * ref[k]
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(W.data, ref["W"], rtol=1e-12)
        np.testing.assert_allclose(b.data, ref["b"], rtol=1e-12)
    np.testing.assert_allclose(opt.second_moment(b), np.sqrt(v["b"] / (1 - b2 ** 2)))


def test_adam_has_no_weight_decay_and_skips_params_without_grad():
    W, b, _ = params_with_grads()
    before = b.data.copy()
    opt = optim.Adam([W, b], lr=0.1)
    assert opt.weight_decay == 0.0
    W.grad = np.ones_like(W.data)
    w0 = W.data.copy()
    opt.step()
    np.testing.assert_array_equal(b.data, before)               # no grad: untouched
    np.testing.assert_allclose(W.data, w0 - 0.1, rtol=1e-6)      # first Adam step is lr * sign(g)


def test_sgd_momentum_by_hand():
    W, b, rng = params_with_grads()
    opt = optim.SGD([W], lr=0.5, momentum=0.9, weight_decay=0.1)
    w, vel = W.data.copy(), np.zeros_like(W.data)
    for _ in range(3):
        g = rng.standard_normal(W.data.shape)
        W.grad = g.copy()
        opt.step()
        vel = 0.9 * vel + (g + 0.1 * w)
        w = w - 0.5 * vel
        np.testing.assert_allclose(W.data, w, rtol=1e-12)
    plain = optim.SGD([b], lr=0.25)
    b.grad = np.ones(3)
    b0 = b.data.copy()
    plain.step()
    np.testing.assert_allclose(b.data, b0 - 0.25)


def test_zero_grad_and_empty_parameter_list():
    W, b, _ = params_with_grads()
    opt = optim.SGD([W, b])
    W.grad = np.ones_like(W.data)
    opt.zero_grad()
    assert W.grad is None
    with pytest.raises(ValueError, match="no parameters"):
        optim.SGD([Parameter(np.ones(2), requires_grad=False)])


def test_lr_schedule_shapes():
    base, warm, total = 1.0, 10, 110
    lrs = [optim.lr_schedule(s, base, warm, total, "linear") for s in range(total + 5)]
    assert lrs[0] == pytest.approx(0.1) and lrs[warm - 1] == pytest.approx(base)   # linear warm-up
    assert np.all(np.diff(lrs[:warm]) > 0) and np.all(np.diff(lrs[warm:]) <= 0)
    assert lrs[warm + 50] == pytest.approx(0.5)                   # half-way down the linear decay
    assert lrs[total] == pytest.approx(0.0) and lrs[-1] == pytest.approx(0.0)
    cos = [optim.lr_schedule(s, base, warm, total, "cosine", min_ratio=0.1) for s in range(total + 1)]
    assert cos[warm] == pytest.approx(base)
    assert cos[warm + 50] == pytest.approx(0.1 + 0.9 * 0.5)      # cosine mid-point
    assert cos[warm + 25] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert cos[total] == pytest.approx(0.1)
    assert optim.lr_schedule(500, base, warm, total, "constant") == base
    assert optim.lr_schedule(0, base, 0, total, "linear") == base
    with pytest.raises(ValueError, match="unknown decay"):
        optim.lr_schedule(20, base, warm, total, "step")


def test_clip_grad_norm():
    W, b, _ = params_with_grads()
    W.grad = np.full((3, 2), 2.0)                                  # norm sqrt(24)
    b.grad = np.array([0.0, 0.0, 5.0])                            # norm 5; total 7
    norm = optim.clip_grad_norm([W, b], max_norm=1.0)
    assert norm == pytest.approx(7.0)
    total = math.sqrt((W.grad ** 2).sum() + (b.grad ** 2).sum())
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(b.grad / W.grad[0, 0], [0, 0, 2.5])   # direction kept
    W.grad = np.full((3, 2), 0.1)
    b.grad = None
    g = W.grad.copy()
    assert optim.clip_grad_norm([W, b], max_norm=1.0) == pytest.approx(math.sqrt(0.06))
    np.testing.assert_array_equal(W.grad, g)                      # below the limit: untouched


@pytest.mark.parametrize("make", [lambda p: optim.AdamW(p, lr=0.01), lambda p: optim.SGD(p, lr=0.1, momentum=0.9)])
def test_optimizer_state_dict_round_trip(make):
    def run(steps, opt, params, rng):
        for _ in range(steps):
            for p in params:
                p.grad = rng.standard_normal(p.data.shape)
            opt.step()

    W, b, _ = params_with_grads()
    opt = make([W, b])
    run(3, opt, [W, b], np.random.default_rng(1))
    state = opt.state_dict()
    saved = [W.data.copy(), b.data.copy()]
    run(2, opt, [W, b], np.random.default_rng(2))               # continue the original
    W2, b2 = Parameter(saved[0]), Parameter(saved[1])
    opt2 = make([W2, b2])
    opt2.load_state_dict(state)                                  # resume a copy from the checkpoint
    assert opt2.step_count == 3
    run(2, opt2, [W2, b2], np.random.default_rng(2))
    np.testing.assert_array_equal(W2.data, W.data)
    np.testing.assert_array_equal(b2.data, b.data)
    state = opt.state_dict()
    key = next(k for k in state if k.endswith(".0"))
    state[key] = np.zeros((5, 5))
    with pytest.raises(ValueError, match="wrong shape"):
        make([Parameter(saved[0]), Parameter(saved[1])]).load_state_dict(state)


def test_optimizer_trains_a_model_in_float32():
    model = mt.nn.Linear(4, 2, rng=0)
    opt = optim.AdamW(model.parameters(), lr=0.05)
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    y = x @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 1.0], [2.0, 1.0]], np.float32)
    first = None
    for _ in range(200):
        loss = mt.F.mse_loss(model(mt.Tensor(x)), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.01 * first
    assert model.weight.data.dtype == np.float32 and opt.m[0].dtype == np.float32
