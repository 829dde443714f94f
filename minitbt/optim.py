"""Optimizers (SGD with momentum, Adam, AdamW), learning-rate schedules and gradient clipping.

Updates run in place on the parameter arrays under no autograd: an optimizer step is not
part of any graph. Each optimizer's ``state_dict()`` holds its moments and step count so
that training resumes exactly.
"""
import math

import numpy as np


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("optimizer got no parameters that require gradients")
        self.lr = lr
        self.step_count = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _slots(self) -> dict:
        """name -> list of per-parameter arrays (moments)."""
        return {}

    def state_dict(self) -> dict:
        state = {"step_count": self.step_count, "lr": self.lr}
        for name, arrays in self._slots().items():
            for i, a in enumerate(arrays):
                state[f"{name}.{i}"] = a.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, arrays in self._slots().items():
            for i, a in enumerate(arrays):
                key = f"{name}.{i}"
                if key not in state or np.shape(state[key]) != a.shape:
                    raise ValueError(f"optimizer state {key!r} is missing or has the wrong shape "
                                     f"(expected {a.shape}); was it saved for a different model?")
                a[...] = state[key]
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])


class SGD(Optimizer):
    """v <- mu v + g (+ wd p);  p <- p - lr v   (momentum mu; plain SGD when mu = 0)."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity = [np.zeros_like(p.data) for p in self.params]

    def _slots(self):
        return {"velocity": self.velocity}

    def step(self) -> None:
        self.step_count += 1
        for p, v in zip(self.params, self.velocity):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                v *= self.momentum
                v += g
                g = v
            p.data -= self.lr * g


class AdamW(Optimizer):
    """Adam (Kingma & Ba 2015) with decoupled weight decay (Loshchilov & Hutter 2019).

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p - lr * wd * p                               (decoupled; skipped for 1-D params:
                                                            biases, LayerNorm, quantizer scales)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)

    ``Adam`` is AdamW with weight_decay = 0. ``second_moment(p)`` exposes sqrt(v_hat), the
    curvature estimate that loss-aware ternarization (LAT) uses.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr)
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._scratch = {}   # dtype -> one flat work array, as large as the largest parameter

    def _slots(self):
        return {"m": self.m, "v": self.v}

    def _work(self, p) -> np.ndarray:
        """A scratch array shaped like p (reused by every parameter: no allocation per step)."""
        buf = self._scratch.get(p.data.dtype)
        if buf is None:
            size = max(q.data.size for q in self.params if q.data.dtype == p.data.dtype)
            buf = self._scratch[p.data.dtype] = np.empty(size, dtype=p.data.dtype)
        return buf[:p.data.size].reshape(p.data.shape)

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        bc1, bc2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        step_size, inv_sqrt_bc2 = self.lr / bc1, 1.0 / math.sqrt(bc2)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            if g is None:
                continue
            w = p.data
            tmp = self._work(p)                   # every update below runs in place
            if self.weight_decay and w.ndim >= 2:
                w *= 1 - self.lr * self.weight_decay
            np.multiply(g, 1 - self.b1, out=tmp)
            m *= self.b1
            m += tmp                              # m = b1 m + (1 - b1) g
            np.multiply(g, g, out=tmp)
            tmp *= 1 - self.b2
            v *= self.b2
            v += tmp                              # v = b2 v + (1 - b2) g^2
            np.sqrt(v, out=tmp)
            tmp *= inv_sqrt_bc2
            tmp += self.eps                       # sqrt(v_hat) + eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            w -= tmp                              # p -= lr m_hat / (sqrt(v_hat) + eps)

    def second_moment(self, p) -> np.ndarray:
        """sqrt(v_hat) for parameter p (zeros before the first step)."""
        i = self._index[id(p)]
        return np.sqrt(self.v[i] / max(1 - self.b2 ** self.step_count, 1e-12))


def Adam(params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8) -> AdamW:
    """Adam = AdamW without weight decay."""
    return AdamW(params, lr, betas, eps, weight_decay=0.0)


def lr_schedule(step: int, base_lr: float, warmup: int, total: int, decay: str = "linear",
                min_ratio: float = 0.0) -> float:
    """Linear warm-up from 0 to base_lr over ``warmup`` steps, then linear or cosine decay to
    min_ratio * base_lr at ``total`` steps ("constant" keeps base_lr after warm-up)."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if decay == "constant" or total <= warmup:
        return base_lr
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    if decay == "linear":
        ratio = 1.0 - frac
    elif decay == "cosine":
        ratio = 0.5 * (1.0 + math.cos(math.pi * frac))
    else:
        raise ValueError(f"unknown decay {decay!r}: use 'linear', 'cosine' or 'constant'")
    return base_lr * (min_ratio + (1 - min_ratio) * ratio)


def _norm(grads) -> float:
    return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))


def clip_grad_norm(params, max_norm: float, apart=(), apart_max_norm: float = None) -> float:
    """Scale all gradients by min(1, max_norm / ||g||) where ||g|| is the global L2 norm; return ||g||.

    ``apart``: parameters left out of that norm (quantizer scales: their gradients sum over every
    element a scale serves, and in the global norm they would shrink every weight's gradient,
    docs/methods.md section 8). They are clipped by their own global norm, to ``apart_max_norm``
    (None or 0: not clipped). The return value is the norm of all gradients, both groups, before
    clipping: ||g||^2 = ||g_rest||^2 + ||g_apart||^2.
    """
    skip = {id(p) for p in apart}
    grads = [p.grad for p in params if p.grad is not None and id(p) not in skip]
    rest = _norm(grads)
    if max_norm and rest > max_norm:
        scale = max_norm / (rest + 1e-6)
        for g in grads:
            g *= scale
    if not skip:
        return rest
    side = [p.grad for p in params if p.grad is not None and id(p) in skip]
    norm_apart = _norm(side)
    if apart_max_norm and norm_apart > apart_max_norm:
        scale = apart_max_norm / (norm_apart + 1e-6)
        for g in side:
            g *= scale
    return math.sqrt(rest ** 2 + norm_apart ** 2)
