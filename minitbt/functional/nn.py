"""Neural-network ops with fused, analytic backward passes.

softmax, log_softmax, layer_norm, dropout, cross_entropy (ignore_index, label smoothing),
soft_cross_entropy and mse_loss (for distillation), scaled dot-product attention, and the
pointer-generator's copy mixture.
Fusing keeps the graph small and each backward exact: these are the hot ops of training.
"""
import numpy as np

from minitbt.tensor import Tensor

make = Tensor.make


def softmax(a: Tensor, axis: int = -1) -> Tensor:
    """y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max x (stability);  dL/dx = y (g - sum(g y))."""
    x = a.data
    y = np.exp(x - x.max(axis=axis, keepdims=True))
    y /= y.sum(axis=axis, keepdims=True)

    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return make(y, (a,), backward, "softmax")


def log_softmax(a: Tensor, axis: int = -1) -> Tensor:
    """y = x - m - log sum e^(x - m);  dL/dx = g - softmax(x) sum(g)."""
    x = a.data
    shifted = x - x.max(axis=axis, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(y) * g.sum(axis=axis, keepdims=True),)
    return make(y, (a,), backward, "log_softmax")


def layer_norm(a: Tensor, weight: Tensor = None, bias: Tensor = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis (Ba et al. 2016), fused.

    xhat = (x - mu) / sqrt(var + eps),  y = xhat * w + b
    dL/dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)),  gh = g * w
    dL/dw = sum(g * xhat),  dL/db = sum(g)  (over all leading axes)
    """
    x = a.data
    d = x.shape[-1]
    xc = x - x.mean(axis=-1, keepdims=True)                          # (..., d)
    var = np.einsum("...i,...i->...", xc, xc)[..., None] / d          # (..., 1), no x^2 temporary
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc
    xhat *= rstd                                                      # in place: xc is ours
    y = xhat * weight.data if weight is not None else xhat.copy()
    if bias is not None:
        y += bias.data
    parents = tuple(t for t in (a, weight, bias) if t is not None)

    def backward(g):
        g2, xh2 = g.reshape(-1, d), xhat.reshape(-1, d)                # (N, d)
        gxh = g2 * xh2                                                # g * xhat, (N, d)
        grads = []
        if weight is not None:
            w = weight.data
            grads.append(gxh.sum(axis=0))                             # dL/dw
            c1 = (g2 @ w)[:, None] / d                                # mean(gh) per row, gh = g * w
            c2 = (gxh @ w)[:, None] / d                               # mean(gh * xhat) per row
            gx = g2 * w                                               # gh, turned into dL/dx in place
            gx -= c1
        else:
            c1 = g2.mean(axis=-1, keepdims=True)
            c2 = gxh.mean(axis=-1, keepdims=True)
            gx = g2 - c1
        gx -= np.multiply(xh2, c2, out=gxh)                           # gxh is spent: reuse its memory
        gx *= rstd.reshape(-1, 1)                                     # (N, d)
        grads.insert(0, gx.reshape(x.shape))
        if bias is not None:
            grads.append(g2.sum(axis=0))                              # dL/db
        return tuple(grads)
    return make(y, parents, backward, "layer_norm")


def dropout(a: Tensor, p: float, training: bool, rng: np.random.Generator) -> Tensor:
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p); identity when not training."""
    if not training or p == 0.0:
        return a
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    scale = np.asarray(1.0 / (1.0 - p), dtype=a.data.dtype)
    m = (rng.random(a.data.shape, dtype=np.float32) >= p) * scale

    def backward(g):
        return (g * m,)
    return make(a.data * m, (a,), backward, "dropout")


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, label_smoothing: float = 0.0) -> Tensor:
    """Mean token cross-entropy from logits (N, C) and integer targets (N,), fused with log_softmax.

    With smoothing eps the target distribution is q = (1 - eps) onehot(t) + eps / C:
    loss_i = -sum_c q_c log p_c = lse_i - (1 - eps) z_{i,t} - eps mean_c z_{i,c},  lse = log sum_c e^z.
    dL/dlogits_i = (p_i - q_i) / n_valid, zero for ignored rows.
    Rows whose target equals ``ignore_index`` (padding) count neither in the sum nor in n_valid.
    """
    x = logits.data
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if x.ndim != 2 or t.shape != x.shape[:1]:
        raise ValueError(f"cross_entropy expects logits (N, C) and targets (N,), got {x.shape} and {t.shape}")
    N, C = x.shape
    valid = t != ignore_index
    n_valid = max(int(valid.sum()), 1)
    tv = np.where(valid, t, 0)
    if valid.any() and (tv.min() < 0 or tv.max() >= C):
        raise IndexError(f"cross_entropy target out of range [0, {C}): {tv.min()}..{tv.max()}")
    rows = np.arange(N)
    z = x - x.max(axis=1, keepdims=True)                           # (N, C), shifted for stability
    nll = -z[rows, tv]                                             # (N,)  (before adding lse)
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * z.mean(axis=1)
    e = np.exp(z, out=z)                                           # (N, C), z is no longer needed
    s = e.sum(axis=1)                                              # (N,)
    nll += np.log(s)
    loss = np.asarray((nll * valid).sum() / n_valid, dtype=x.dtype)

    def backward(g):
        w = (valid * (g / n_valid)).astype(x.dtype)                # (N,) weight of each row
        grad = e * (w / s)[:, None]                                # p * w
        grad[rows, tv] -= (1 - label_smoothing) * w
        if label_smoothing:
            grad -= (label_smoothing / C) * w[:, None]
        return (grad,)
    return make(loss, (logits,), backward, "cross_entropy")


def soft_cross_entropy(logits: Tensor, target_probs, mask=None, temperature: float = 1.0) -> Tensor:
    """Distillation loss: mean over rows of -sum_c p_teacher,c log softmax(z / T)_c.

    logits (N, C), target_probs (N, C) (constant: the teacher is frozen), mask (N,) of rows to count.
    dL/dz = (softmax(z / T) sum_c p_teacher,c - p_teacher) / (T n)   (the sum is 1 for a true distribution).
    """
    x = logits.data / temperature if temperature != 1 else logits.data    # z / 1 == z: no copy
    p_t = np.asarray(target_probs.data if isinstance(target_probs, Tensor) else target_probs, dtype=x.dtype)
    if p_t.shape != x.shape:
        raise ValueError(f"soft_cross_entropy: logits {x.shape} and teacher probabilities {p_t.shape} differ")
    keep = np.ones(x.shape[0], dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    n = max(int(keep.sum()), 1)
    # (N, C) arrays are the cost here (N ~ 3,000 tokens, C ~ 8,000 words): one for log p, one
    # scratch for e^shifted then p_t log p, every other step in place (the same values as out of place)
    logp = x - x.max(axis=1, keepdims=True)                         # shifted
    work = np.exp(logp)
    logp -= np.log(work.sum(axis=1, keepdims=True))                  # log softmax(z / T)
    loss = np.asarray(-(np.multiply(p_t, logp, out=work).sum(axis=1) * keep).sum() / n, dtype=x.dtype)
    del work

    def backward(g):
        mass = p_t.sum(axis=1, keepdims=True)                      # (N, 1), 1 up to rounding
        grad = np.exp(logp)                                        # softmax(z / T), fresh: logp is kept
        grad *= mass
        grad -= p_t
        grad *= keep[:, None] * (g / (n * temperature))          # one pass: 0 or the factor, per row
        return (grad.astype(x.dtype, copy=False),)
    return make(loss, (logits,), backward, "soft_cross_entropy")


def mse_loss(a: Tensor, target) -> Tensor:
    """L = mean (a - target)^2 with a constant target;  dL/da = 2 (a - target) / n."""
    t = np.asarray(target.data if isinstance(target, Tensor) else target, dtype=a.data.dtype)
    if t.shape != a.data.shape:
        raise ValueError(f"mse_loss: shapes differ, {a.data.shape} vs {t.shape}")
    diff = a.data - t
    n = diff.size

    def backward(g):
        return (g * (2.0 / n) * diff,)
    return make(np.asarray((diff * diff).mean(), dtype=a.data.dtype), (a,), backward, "mse_loss")


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask=None) -> Tensor:
    """Fused attention:  P = softmax(q k^T / sqrt(d) masked),  y = P v.

    q (B, H, Tq, d), k and v (B, H, Tk, d); mask broadcastable to (B, H, Tq, Tk), True = hidden.
    Backward:  dV = P^T g,  dP = g V^T,  dS = P (dP - sum(dP P)),  dQ = dS K / sqrt(d),  dK = dS^T Q / sqrt(d).
    """
    qd, kd, vd = q.data, k.data, v.data
    scale = np.asarray(qd.shape[-1] ** -0.5, dtype=qd.dtype)
    p = qd @ np.swapaxes(kd, -1, -2)                              # (B, H, Tq, Tk) scores, then in place:
    p *= scale
    if mask is not None:
        np.copyto(p, np.asarray(-1e9, dtype=p.dtype), where=np.broadcast_to(np.asarray(mask, bool), p.shape))
    p -= p.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)                            # P
    y = p @ vd                                                    # (B, H, Tq, d)

    def backward(g):
        gv = np.swapaxes(p, -1, -2) @ g if v.requires_grad else None
        ds = g @ np.swapaxes(vd, -1, -2)                          # dP, then in place to dS
        ds -= np.einsum("...ij,...ij->...i", ds, p)[..., None]
        ds *= p
        ds *= scale
        gq = ds @ kd if q.requires_grad else None
        gk = np.swapaxes(ds, -1, -2) @ qd if k.requires_grad else None
        return gq, gk, gv
    return make(y, (q, k, v), backward, "attention")


def copy_mixture(logits: Tensor, gate: Tensor, attn: Tensor, src_ids) -> Tensor:
    """The pointer-generator's output (See et al. 2017, eq. 9), as log-probabilities:

        p(w) = g softmax(z)_w + (1 - g) sum_{s: x_s = w} a_s,     g = sigmoid(u),     y = log p(w)

    logits z (B, T, V); gate u (B, T, 1); attn a (B, T, S), each row a distribution over the
    source positions; src_ids x (B, S) int, the source tokens (one vocabulary: the copied mass
    lands on the source's own token ids). With R = dL/dy / p, q = softmax(z), c the copy term:
        dL/dz = g q (R - sum_w R q),   dL/du = g (1 - g) sum_w R (q - c),   dL/da_s = (1 - g) R[x_s].
    """
    z, u, a = logits.data, gate.data, attn.data
    ids = np.asarray(src_ids)
    B, T, V = z.shape
    if u.shape != (B, T, 1) or a.shape[:2] != (B, T) or ids.shape != (B, a.shape[2]):
        raise ValueError(f"copy_mixture: logits {z.shape}, gate {u.shape}, attn {a.shape}, src_ids {ids.shape} "
                         f"do not fit (B, T, V), (B, T, 1), (B, T, S), (B, S)")
    where = (np.arange(B)[:, None, None], np.arange(T)[None, :, None], ids[:, None, :])   # (B, T, S) -> vocab
    q = np.exp(z - z.max(axis=-1, keepdims=True))
    q /= q.sum(axis=-1, keepdims=True)                             # softmax(z), (B, T, V)
    g = 1.0 / (1.0 + np.exp(-u))                                   # (B, T, 1)
    c = np.zeros_like(q)
    np.add.at(c, where, a)                                         # the copy distribution, (B, T, V)
    p = g * q + (1 - g) * c
    tiny = np.finfo(p.dtype).tiny                                  # a word with no mass at all: log 0
    y = np.log(np.maximum(p, tiny))

    def backward(grad):
        r = grad / np.maximum(p, tiny)                             # dL/dp
        gz = g * q * (r - (r * q).sum(axis=-1, keepdims=True)) if logits.requires_grad else None
        gu = g * (1 - g) * (r * (q - c)).sum(axis=-1, keepdims=True) if gate.requires_grad else None
        ga = (1 - g) * r[where] if attn.requires_grad else None
        return gz, gu, ga
    return make(y, (logits, gate, attn), backward, "copy_mixture")
