"""Multi-head attention (Vaswani et al. 2017) with masks, an incremental KV cache and
hooks for quantizing the attention states (TBT, Liu et al. 2023).

    Q = x W_q^T,  K = m W_k^T,  V = m W_v^T    (m = x for self-attention, the encoder output for cross)
    head h:  P_h = softmax(Q_h K_h^T / sqrt(d_h) + mask),  O_h = P_h V_h
    y = concat_h(O_h) W_o^T

Quantization hooks (all None = full precision): ``q_quant``, ``k_quant``, ``v_quant`` act on the
head states before the two matmuls (Q scaled by d_h^-0.5 first, as TBT does) and ``p_quant``
on the attention probabilities (a non-negative quantizer). With no hook and no recording,
the fused kernel F.scaled_dot_product_attention is used; otherwise the same maths is spelled
out op by op. Set ``record_attn = True`` to keep the probabilities in ``self.attn`` (distillation),
``keep_probs = True`` to keep them, in the graph, in ``self.probs`` (the pointer-generator's copy).
"""
import numpy as np

from minitbt import functional as F
from minitbt.nn.layers import Linear
from minitbt.nn.module import Module


def causal_mask(t_q: int, t_k: int, offset: int = 0) -> np.ndarray:
    """(t_q, t_k) boolean, True where query i (at absolute position offset + i) may NOT see key j."""
    return np.arange(t_k)[None, :] > (offset + np.arange(t_q))[:, None]


class MultiHeadAttention(Module):
    def __init__(self, d_model: int, n_heads: int, bias: bool = True, rng=None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.q_proj = Linear(d_model, d_model, bias, rng)
        self.k_proj = Linear(d_model, d_model, bias, rng)
        self.v_proj = Linear(d_model, d_model, bias, rng)
        self.out_proj = Linear(d_model, d_model, bias, rng)
        self.q_quant = self.k_quant = self.v_quant = self.p_quant = None
        self.record_attn = False
        self.attn = None
        self.keep_probs = False
        self.probs = None

    def _heads(self, x):                                   # (B, T, d) -> (B, H, T, d_h)
        B, T, _ = x.shape
        return x.reshape(B, T, self.n_heads, self.d_head).permute(0, 2, 1, 3)

    def forward(self, x, memory=None, key_padding_mask=None, causal: bool = False, cache: dict = None):
        """x (B, Tq, d); memory (B, Tk, d) for cross-attention, else None.

        key_padding_mask: (B, Tk) bool, True at padded keys. causal: hide future keys.
        cache: a dict kept by the caller for incremental decoding. Self-attention appends this
        step's K, V to it; cross-attention computes K, V from ``memory`` once and reuses them.
        """
        B, Tq, _ = x.shape
        q = self._heads(self.q_proj(x))                    # (B, H, Tq, d_h)
        offset = 0
        # Decoding with a cache and row-local K/V quantizers (each token's codes depend on that
        # token only): quantize each new K, V row once and cache the quantized rows, rather than
        # quantizing the whole cache again at every step. The same values either way.
        kv_done = cache is not None and all(qz is None or getattr(qz, "row_local", False)
                                            for qz in (self.k_quant, self.v_quant))
        if memory is None:                                 # self-attention
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if cache is not None:
                if kv_done:
                    k, v = self._quantize_kv(k, v)
                if "k" in cache:
                    offset = cache["k"].shape[2]
                    k = F.concatenate([cache["k"], k], axis=2)
                    v = F.concatenate([cache["v"], v], axis=2)
                cache["k"], cache["v"] = k, v
        elif cache is not None and "k" in cache:           # cross-attention, cached
            k, v = cache["k"], cache["v"]
        else:
            k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
            if cache is not None:
                if kv_done:
                    k, v = self._quantize_kv(k, v)
                cache["k"], cache["v"] = k, v

        mask = None                                        # broadcastable to (B, H, Tq, Tk)
        if key_padding_mask is not None:
            mask = key_padding_mask[:, None, None, :]
        if causal:
            cm = causal_mask(Tq, k.shape[2], offset)[None, None]
            mask = cm if mask is None else (mask | cm)

        hooks = (self.q_quant, self.k_quant, self.v_quant, self.p_quant)
        if all(h is None for h in hooks) and not (self.record_attn or self.keep_probs):
            o = F.scaled_dot_product_attention(q, k, v, mask)
        else:
            o = self._attend_op_by_op(q, k, v, mask, kv_done)
        o = o.permute(0, 2, 1, 3).reshape(B, Tq, self.d_model)   # (B, Tq, d)
        return self.out_proj(o)

    def _quantize_kv(self, k, v):
        k = k if self.k_quant is None else self.k_quant(k)
        v = v if self.v_quant is None else self.v_quant(v)
        return k, v

    def _attend_op_by_op(self, q, k, v, mask, kv_done: bool = False):
        """The attention maths op by op, with the quantizers where TBT places them
        (``kv_done``: K and V come quantized from the cache)."""
        q = q * (self.d_head ** -0.5)                      # scale Q before quantizing it
        if self.q_quant is not None:
            q = self.q_quant(q)
        if not kv_done:
            k, v = self._quantize_kv(k, v)
        s = q @ k.transpose(-1, -2)                        # (B, H, Tq, Tk), scores stay FP
        if mask is not None:
            s = F.masked_fill(s, mask, -1e9)
        p = F.softmax(s, axis=-1)
        if self.record_attn:
            self.attn = p
        if self.keep_probs:
            self.probs = p
        if self.p_quant is not None:
            p = self.p_quant(p)
        return p @ v                                       # (B, H, Tq, d_h)

    def extra_repr(self):
        return f"d_model={self.d_model}, n_heads={self.n_heads}"
