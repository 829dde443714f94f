"""minitbt's Seq2SeqTransformer in PyTorch: the same modules under the same names.

A translation of minitbt/nn/transformer.py, attention.py and minitbt/quant/layers.py. Every
parameter and buffer has the name it has in minitbt's state dict (``encoder.0.self_attn.q_proj.weight``,
``...q_proj.input_quantizer.scale``, ``...initialized``), so a minitbt state dict loads here
as it is, and this module's state dict loads into minitbt.

    src ids (B, S) --embed*sqrt(d) + pos--> [encoder layer] x N --> memory (B, S, d)
    tgt ids (B, T) --embed*sqrt(d) + pos--> [decoder layer: self-attn (causal), cross-attn, FFN] x N
               --> logits = h E^T (tied) or h W_out^T                                    (B, T, V)

Post-LN (BART): x = LN(x + dropout(f(x))), a LayerNorm on the embeddings; pre-LN: x = x + dropout(f(LN(x))),
a final LayerNorm. Every linear layer is a ``QuantLinear`` (both quantizers None = an ordinary
linear layer) and the token embedding a ``QuantEmbedding``; ``to_torch`` puts minitbt's quantizers
(translated, minitbt/torch/quant/) where the minitbt model has them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as tF
from torch import nn

from minitbt.nn.transformer import TransformerConfig, sinusoidal_table


class QuantLinear(nn.Module):
    """y = q_x(x) q_W(W)^T + b, W: (out, in). Translation of minitbt.quant.QuantLinear (and of
    minitbt.nn.Linear when both quantizers are None). Initialised as minitbt's Linear: Xavier-uniform
    W, b = 0 (torch's random numbers, not minitbt's: copy minitbt's weights with ``to_torch``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_quantizer=None,
                 input_quantizer=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.input_norm = None                             # SubLN: an nn.LayerNorm before the input quantizer

    def forward(self, x):                                  # (..., in) -> (..., out)
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        return tF.linear(x, w, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class QuantEmbedding(nn.Module):
    """y = q_W(W)[ids], W: (V, d), N(0, std^2) with std = d^-0.5 by default. Translation of
    minitbt.quant.QuantEmbedding (and minitbt.nn.Embedding when the quantizer is None): a row-local
    quantizer is applied to the looked-up rows only, which equals quantizing the table, then looking up."""

    def __init__(self, num_embeddings: int, dim: int, weight_quantizer=None, std: float = None):
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = nn.Parameter(torch.randn(num_embeddings, dim) * (dim ** -0.5 if std is None else std))
        self.weight_quantizer = weight_quantizer

    def forward(self, ids):                                # (...) int -> (..., dim)
        wq = self.weight_quantizer
        if wq is None:
            return tF.embedding(ids, self.weight)
        if getattr(wq, "row_local", False):
            return wq(tF.embedding(ids, self.weight))
        return tF.embedding(ids, wq(self.weight))

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


def causal_mask(t_q: int, t_k: int, offset: int = 0, device=None) -> torch.Tensor:
    """(t_q, t_k) bool, True where query i (at absolute position offset + i) may NOT see key j."""
    return torch.arange(t_k, device=device)[None, :] > (offset + torch.arange(t_q, device=device))[:, None]


class MultiHeadAttention(nn.Module):
    """Translation of minitbt.nn.MultiHeadAttention (masks True = hidden, the same KV cache dict):

        Q = x W_q^T, K = m W_k^T, V = m W_v^T;  P_h = softmax(Q_h K_h^T / sqrt(d_h) + mask);  y = concat_h(P_h V_h) W_o^T

    With quantizer hooks (``q_quant``, ``k_quant``, ``v_quant``, ``p_quant``: TBT's placement) or
    ``record_attn``, the maths runs op by op as in minitbt; otherwise in torch's fused kernel."""

    QUANTIZER_SITES = ("q_quant", "k_quant", "v_quant", "p_quant")

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.q_proj = QuantLinear(d_model, d_model, bias)
        self.k_proj = QuantLinear(d_model, d_model, bias)
        self.v_proj = QuantLinear(d_model, d_model, bias)
        self.out_proj = QuantLinear(d_model, d_model, bias)
        self.q_quant = self.k_quant = self.v_quant = self.p_quant = None
        self.record_attn = False
        self.attn = None

    def _heads(self, x):                                   # (B, T, d) -> (B, H, T, d_h)
        B, T, _ = x.shape
        return x.reshape(B, T, self.n_heads, self.d_head).permute(0, 2, 1, 3)

    def forward(self, x, memory=None, key_padding_mask=None, causal: bool = False, cache: dict = None):
        """x (B, Tq, d); memory (B, Tk, d) for cross-attention; key_padding_mask (B, Tk) bool, True = pad."""
        B, Tq, _ = x.shape
        q = self._heads(self.q_proj(x))                    # (B, H, Tq, d_h)
        offset = 0
        if memory is None:                                 # self-attention
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if cache is not None:
                if "k" in cache:
                    offset = cache["k"].shape[2]
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        elif cache is not None and "k" in cache:           # cross-attention, cached
            k, v = cache["k"], cache["v"]
        else:
            k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
            if cache is not None:
                cache["k"], cache["v"] = k, v

        mask = None                                        # broadcastable to (B, H, Tq, Tk), True = hidden
        if key_padding_mask is not None:
            mask = key_padding_mask[:, None, None, :]
        if causal:
            cm = causal_mask(Tq, k.shape[2], offset, x.device)[None, None]
            mask = cm if mask is None else (mask | cm)

        if all(getattr(self, h) is None for h in self.QUANTIZER_SITES) and not self.record_attn:
            o = tF.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else ~mask)
        else:
            o = self._attend_op_by_op(q, k, v, mask)
        o = o.permute(0, 2, 1, 3).reshape(B, Tq, self.d_model)   # (B, Tq, d)
        return self.out_proj(o)

    def _attend_op_by_op(self, q, k, v, mask):
        q = q * (self.d_head ** -0.5)                      # scale Q before quantizing it (TBT)
        if self.q_quant is not None:
            q = self.q_quant(q)
        if self.k_quant is not None:
            k = self.k_quant(k)
        if self.v_quant is not None:
            v = self.v_quant(v)
        s = q @ k.transpose(-1, -2)                        # (B, H, Tq, Tk), scores stay FP
        if mask is not None:
            s = s.masked_fill(mask, -1e9)
        p = torch.softmax(s, dim=-1)
        if self.record_attn:
            self.attn = p
        if self.p_quant is not None:
            p = self.p_quant(p)
        return p @ v                                       # (B, H, Tq, d_h)


class FeedForward(nn.Module):
    """y = fc2(act(fc1(x))), fc1: d -> d_ff, fc2: d_ff -> d; act ReLU, GELU or tanh-GELU
    (``width``: this layer's d_ff when the config gives one per layer)."""

    def __init__(self, cfg: TransformerConfig, width: int = None):
        super().__init__()
        width = width or cfg.d_ff
        self.fc1 = QuantLinear(cfg.d_model, width)
        self.fc2 = QuantLinear(width, cfg.d_model)
        self.activation = cfg.activation

    def forward(self, x):                                  # (B, T, d) -> (B, T, d)
        h = self.fc1(x)                                    # (B, T, d_ff)
        if self.activation == "relu":
            h = torch.relu(h)
        else:
            h = tF.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.fc2(h)


class _Sublayer(nn.Module):
    """A residual block around one sublayer, post-LN or pre-LN (minitbt's _Sublayer)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pre_ln = cfg.pre_ln

    def residual(self, x, fn):
        if self.pre_ln:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, width: int = None):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.attn_block = _Sublayer(cfg)
        self.ffn = FeedForward(cfg, width)
        self.ffn_block = _Sublayer(cfg)

    def forward(self, x, src_pad):                         # (B, S, d), (B, S) bool
        x = self.attn_block.residual(x, lambda h: self.self_attn(h, key_padding_mask=src_pad))
        return self.ffn_block.residual(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, width: int = None):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.self_block = _Sublayer(cfg)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.cross_block = _Sublayer(cfg)
        self.ffn = FeedForward(cfg, width)
        self.ffn_block = _Sublayer(cfg)

    def forward(self, x, memory, src_pad, tgt_pad=None, cache=None):
        sc = cache["self"] if cache is not None else None
        cc = cache["cross"] if cache is not None else None
        x = self.self_block.residual(x, lambda h: self.self_attn(h, key_padding_mask=tgt_pad, causal=True, cache=sc))
        x = self.cross_block.residual(x, lambda h: self.cross_attn(h, memory, key_padding_mask=src_pad, cache=cc))
        return self.ffn_block.residual(x, self.ffn)


def ffn_widths(cfg: TransformerConfig):
    """(encoder, decoder) FFN widths, one per layer: the config's own (a pruned model) or d_ff."""
    if hasattr(cfg, "layer_ffn_widths"):
        return cfg.layer_ffn_widths()
    return [cfg.d_ff] * cfg.n_encoder_layers, [cfg.d_ff] * cfg.n_decoder_layers


class Seq2SeqTransformer(nn.Module):
    """``model(src_ids, tgt_ids)`` -> logits (B, T, V), as minitbt.nn.Seq2SeqTransformer.

    ``config`` is minitbt's TransformerConfig; ``quant_recipe`` the QuantRecipe the quantizers came
    from (None: full precision). Ids may be NumPy arrays or tensors. Built from a config, the weights
    are drawn from minitbt's distributions with torch's generator seeded by ``config.seed``."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        with torch.random.fork_rng(devices=[]):            # seeded, leaving torch's global generator as it was
            torch.manual_seed(cfg.seed)
            self._build(cfg)

    def _build(self, cfg: TransformerConfig):
        if cfg.copy:
            raise NotImplementedError("minitbt.torch has no pointer-generator (copy) output; a copy model runs "
                                      "in minitbt (NumPy) only")
        self.config = cfg
        self.quant_recipe = None
        d = cfg.d_model
        self.embed = QuantEmbedding(cfg.vocab_size, d)     # shared by encoder, decoder (and output)
        self.embed_scale = float(np.sqrt(d))
        if cfg.positions == "learned":
            self.pos = QuantEmbedding(cfg.max_len, d, std=0.02)
        else:
            self.pos = None
            self.register_buffer("pos_table", torch.from_numpy(sinusoidal_table(cfg.max_len, d)))
        self.enc_embed_norm = None if cfg.pre_ln else nn.LayerNorm(d, eps=1e-5)
        self.dec_embed_norm = None if cfg.pre_ln else nn.LayerNorm(d, eps=1e-5)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        enc_ff, dec_ff = ffn_widths(cfg)
        self.encoder = nn.ModuleList(EncoderLayer(cfg, w) for w in enc_ff)
        self.decoder = nn.ModuleList(DecoderLayer(cfg, w) for w in dec_ff)
        self.enc_final_norm = nn.LayerNorm(d, eps=1e-5) if cfg.pre_ln else None
        self.dec_final_norm = nn.LayerNorm(d, eps=1e-5) if cfg.pre_ln else None
        self.lm_head = None if cfg.tie_embeddings else QuantLinear(d, cfg.vocab_size, bias=False)
        self.record_states = False                         # keep hidden states in self.states (distillation)
        self.states = None

    def _ids(self, ids):
        return torch.as_tensor(np.asarray(ids) if not torch.is_tensor(ids) else ids,
                               device=self.embed.weight.device).long()

    def _embed(self, ids, norm, offset=0):
        """Token embedding * sqrt(d) + positions (then LayerNorm in post-LN), then dropout."""
        T = ids.shape[1]
        if offset + T > self.config.max_len:
            raise ValueError(f"sequence of length {offset + T} exceeds max_len {self.config.max_len}")
        x = self.embed(ids) * self.embed_scale             # (B, T, d)
        if self.pos is not None:
            x = x + self.pos(torch.arange(offset, offset + T, device=ids.device))
        else:
            x = x + self.pos_table[offset:offset + T].to(x.dtype)
        if norm is not None:
            x = norm(x)
        return self.embed_dropout(x)

    def encode(self, src_ids):
        """src_ids (B, S) -> memory (B, S, d), src_pad (B, S) bool."""
        src_ids = self._ids(src_ids)
        src_pad = src_ids == self.config.pad_id
        x = self._embed(src_ids, self.enc_embed_norm)
        hidden = [x]
        for layer in self.encoder:
            x = layer(x, src_pad)
            hidden.append(x)
        if self.enc_final_norm is not None:
            x = self.enc_final_norm(x)
        if self.record_states:
            self.states["encoder"] = hidden
        return x, src_pad

    def decode(self, tgt_ids, memory, src_pad, cache=None, offset: int = 0):
        """tgt_ids (B, T) -> logits (B, T, V). With a cache (``init_cache``) only new tokens are fed."""
        tgt_ids = self._ids(tgt_ids)
        tgt_pad = (tgt_ids == self.config.pad_id) if cache is None else None
        if tgt_pad is not None and not bool(tgt_pad.any()):
            tgt_pad = None
        x = self._embed(tgt_ids, self.dec_embed_norm, offset)
        hidden = [x]
        for i, layer in enumerate(self.decoder):
            x = layer(x, memory, src_pad, tgt_pad, None if cache is None else cache[i])
            hidden.append(x)
        if self.dec_final_norm is not None:
            x = self.dec_final_norm(x)
        if self.record_states:
            self.states["decoder"] = hidden
        return self.output_projection(x)

    def output_projection(self, h):                        # (B, T, d) -> (B, T, V), full precision
        if self.lm_head is not None:
            return self.lm_head(h)
        return tF.linear(h, self.embed.weight)

    def init_cache(self):
        return [{"self": {}, "cross": {}} for _ in self.decoder]

    def forward(self, src_ids, tgt_ids):
        if self.record_states:
            self.states = {}
        memory, src_pad = self.encode(src_ids)
        return self.decode(tgt_ids, memory, src_pad)

    def attention_modules(self):
        """Every MultiHeadAttention, in minitbt's order (encoder self, decoder self, decoder cross)."""
        return ([l.self_attn for l in self.encoder] + [l.self_attn for l in self.decoder]
                + [l.cross_attn for l in self.decoder])


def greedy(model: Seq2SeqTransformer, src, max_len: int = 64, min_len: int = 0) -> list:
    """minitbt.decode.greedy on the PyTorch model (KV cache, argmax each step, stop at <eos>):
    src (B, S) ids -> list of B id lists without specials. The decoding loop is minitbt's own; this
    only hands it NumPy logits. Runs in eval mode without a graph, then restores the mode."""
    from minitbt.decode import greedy as minitbt_greedy

    class _NumpyLogits:
        config = model.config

        def encode(self, src_ids):
            return model.encode(src_ids)

        def init_cache(self):
            return model.init_cache()

        def decode(self, tgt, memory, src_pad, cache=None, offset=0):
            return model.decode(tgt, memory, src_pad, cache, offset).detach().cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return minitbt_greedy(_NumpyLogits(), src, max_len, min_len)
    finally:
        model.train(was_training)


__all__ = ["QuantLinear", "QuantEmbedding", "MultiHeadAttention", "FeedForward", "EncoderLayer", "DecoderLayer",
           "Seq2SeqTransformer", "causal_mask", "greedy"]
