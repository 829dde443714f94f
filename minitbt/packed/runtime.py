"""The lean decoding path of the packed model: encode and cached decode on plain arrays."""
import numpy as np

from minitbt.nn.attention import causal_mask
from minitbt.nn.layers import Linear
from minitbt.nn.transformer import Seq2SeqTransformer
from minitbt.quant.activation import (BiTElasticBinary, ElasticQuantizer, MinMaxQuantizer,
                                      PerChannelQuantizer)
from minitbt.tensor import Tensor, no_grad
from minitbt.packed.levels import _fake_quant, _row_local, _same_quantizer
from minitbt.packed.layers import PackedEmbedding, PackedLinear


def _layer_norm(x, norm):
    """F.layer_norm's forward, the same operations (add.reduce / d is bit-identical to mean)."""
    d = np.asarray(x.shape[-1], dtype=x.dtype)
    xc = x - np.add.reduce(x, axis=-1, keepdims=True) / d
    var = np.einsum("...i,...i->...", xc, xc)[..., None] / d
    var += np.asarray(norm.eps, dtype=x.dtype)
    xc *= np.divide(1.0, np.sqrt(var, out=var), out=var)
    y = xc * norm.weight.data
    y += norm.bias.data
    return y


def _linear(mod, x2):
    """Any of the model's linear layers on a C-contiguous (M, K) array -> (M, N)."""
    if isinstance(mod, PackedLinear):
        return mod.apply2d(x2)
    if type(mod) is Linear:                                                 # F.linear's forward
        y = x2 @ mod.weight.data.T
        if mod.bias is not None:
            y += mod.bias.data
        return y
    return mod(Tensor(x2)).data


def _plan(attn, names):
    """What _head_states does for the projections ``names`` of ``attn``, worked out once:
    (fused, hooks, quantized, one_quantizer). ``fused`` is one PackedLinear for all of them when
    they are ternary PackedLinears whose input quantizers agree (one quantization, one kernel
    call), else None; ``one_quantizer``: the hooks are equal stateless quantizers. Kept in the
    first projection's layouts (reset_layouts() drops it) or, for a float model, on the module."""
    first = getattr(attn, names[0])
    store = first._layouts if isinstance(first, PackedLinear) else attn.__dict__.setdefault("_lean_plans", {})
    plan = store.get(names)
    if plan is None:
        mods = [getattr(attn, n) for n in names]
        ok = all(isinstance(m, PackedLinear) and m.kind == "ternary" for m in mods) \
            and len({m.in_features for m in mods}) == 1 \
            and len({m.bias is None for m in mods}) == 1 \
            and _same_quantizer([m.input_quantizer for m in mods])
        hooks = [getattr(attn, n[0] + "_quant") for n in names]
        plan = store[names] = (PackedLinear._concat(mods) if ok else None, hooks, _quantized(attn),
                               all(h is not None for h in hooks) and _same_quantizer(hooks))
    return plan


def _quantized(attn) -> bool:
    return any(h is not None for h in (attn.q_quant, attn.k_quant, attn.v_quant, attn.p_quant))


def _attention_core(attn, q, k, v, mask, quantized):
    """Scores, softmax and P.V, as MultiHeadAttention does them. With quantization hooks, q, k, v
    are already quantized (q scaled by d_h^-0.5 first): _attend_op_by_op; without, the fused
    F.scaled_dot_product_attention. Returns (B, H, Tq, d_h)."""
    if not quantized:
        p = q @ np.swapaxes(k, -1, -2)
        p *= np.asarray(q.shape[-1] ** -0.5, dtype=p.dtype)
        if mask is not None:
            np.copyto(p, np.asarray(-1e9, dtype=p.dtype), where=np.broadcast_to(mask, p.shape))
        p -= np.maximum.reduce(p, axis=-1, keepdims=True)
        np.exp(p, out=p)
        p /= np.add.reduce(p, axis=-1, keepdims=True)
        return p @ v
    s = q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s = np.where(mask, np.asarray(-1e9, dtype=s.dtype), s)
    p = np.exp(s - np.maximum.reduce(s, axis=-1, keepdims=True))
    p /= np.add.reduce(p, axis=-1, keepdims=True)
    return _fake_quant(attn.p_quant, p) @ v


def _head_states(attn, names, x2, B, T):
    """The projections ``names`` (of "q_proj", "k_proj", "v_proj") of x2 (B*T, d) as head states
    (B, H, T, d_h), through the attention's quantization hooks (q scaled by d_h^-0.5 first), as
    MultiHeadAttention does. Fused projections give one (B, T, n, H, d_h) array; when the hooks
    are equal stateless quantizers it is quantized in one call (they work per row of d_h)."""
    H, dh = attn.n_heads, attn.d_head
    fused, hooks, quant, one_quantizer = _plan(attn, names)
    scale = np.asarray(dh ** -0.5, dtype=x2.dtype)
    if fused is not None:
        y = fused.apply2d(x2).reshape(B, T, len(names), H, dh)          # ours: scaled in place
        if quant and names[0] == "q_proj":
            y[:, :, 0] *= scale
        if quant and one_quantizer:
            y, quant = _fake_quant(hooks[0], y), False
        parts = [y[:, :, i] for i in range(len(names))]
    else:
        parts = [_linear(getattr(attn, n), x2).reshape(B, T, H, dh) for n in names]
        if quant and names[0] == "q_proj":
            parts[0] = parts[0] * scale
    if quant:
        parts = [_fake_quant(h, x) for h, x in zip(hooks, parts)]
    return [x.transpose(0, 2, 1, 3) for x in parts]


def _self_attention(attn, x, key_padding_mask=None, causal=False, cache=None):
    """MultiHeadAttention.forward for self-attention on arrays; ``cache`` (decoding) keeps the
    (quantized) keys and values of the earlier steps under "lean_k", "lean_v"."""
    B, T, d = x.shape
    q, k, v = _head_states(attn, ("q_proj", "k_proj", "v_proj"), x.reshape(B * T, d), B, T)
    offset = 0
    if cache is not None:
        if "lean_k" in cache:
            offset = cache["lean_k"].shape[2]
            k = np.concatenate([cache["lean_k"], k], axis=2)
            v = np.concatenate([cache["lean_v"], v], axis=2)
        cache["lean_k"], cache["lean_v"] = k, v
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    if causal and T > 1:                                    # one new query sees every cached key
        cm = causal_mask(T, k.shape[2], offset)[None, None]
        mask = cm if mask is None else (mask | cm)
    o = _attention_core(attn, q, k, v, mask, _quantized(attn))
    o = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(B * T, d)
    return _linear(attn.out_proj, o).reshape(B, T, d)


def _cross_attention(attn, x, memory, key_padding_mask, cache):
    """Cross-attention on arrays; the memory's (quantized) keys and values are computed once."""
    B, T, d = x.shape
    if "lean_k" not in cache:
        S = memory.shape[1]
        k, v = _head_states(attn, ("k_proj", "v_proj"), np.ascontiguousarray(memory).reshape(B * S, d), B, S)
        cache["lean_k"], cache["lean_v"] = k, v
    (q,) = _head_states(attn, ("q_proj",), x.reshape(B * T, d), B, T)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    o = _attention_core(attn, q, cache["lean_k"], cache["lean_v"], mask, _quantized(attn))
    o = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(B * T, d)
    return _linear(attn.out_proj, o).reshape(B, T, d)


def _residual(block, x, fn):
    """_Sublayer.residual (dropout is off in eval)."""
    if block.pre_ln:
        return x + fn(_layer_norm(x, block.norm))
    return _layer_norm(x + fn(x), block.norm)


def _feed_forward(ffn, x):
    B, T, d = x.shape
    h = _linear(ffn.fc1, x.reshape(B * T, d))
    if ffn.activation == "relu":
        h = np.maximum(h, 0)
    else:
        from minitbt import functional as F
        h = F.gelu(Tensor(h), "tanh" if ffn.activation == "gelu_tanh" else "none").data
    return _linear(ffn.fc2, h).reshape(B, T, -1)


def _embed(model, ids, norm, offset=0):
    """Seq2SeqTransformer._embed on arrays."""
    T = ids.shape[1]
    if offset + T > model.config.max_len:
        raise ValueError(f"sequence of length {offset + T} exceeds max_len {model.config.max_len}")
    e = model.embed
    x = e.lookup(ids) if isinstance(e, PackedEmbedding) else e(ids).data
    x = x * np.asarray(model.embed_scale, dtype=x.dtype)
    if model.pos is not None:
        x = x + model.pos.weight.data[offset:offset + T]
    else:
        x = x + model.pos_table[offset:offset + T]
    return x if norm is None else _layer_norm(x, norm)


def _lm_head(model, h):                                                     # (B, T, d) -> (B, T, V)
    B, T, d = h.shape
    h2 = h.reshape(B * T, d)
    if model.lm_head is not None:
        return _linear(model.lm_head, h2).reshape(B, T, -1)
    return (h2 @ model.embed.weight.data.T).reshape(B, T, -1)


def lean_unsupported(model):
    """Why the lean path cannot run ``model`` (a string), or None when it can."""
    if not isinstance(model, Seq2SeqTransformer):
        return "not a Seq2SeqTransformer"
    if model.training:
        return "training mode (dropout)"
    if model.record_states:
        return "record_states is on"
    for attn in model.attention_modules():
        if attn.record_attn:
            return "an attention module records its probabilities"
        if not all(_row_local(h) for h in (attn.q_quant, attn.k_quant, attn.v_quant)):
            return "an attention-state quantizer is not per token (or not initialised)"
        p = attn.p_quant
        if isinstance(p, (ElasticQuantizer, BiTElasticBinary, PerChannelQuantizer)) and not p.initialized[0]:
            return "an attention-probability quantizer is not initialised"
    return None


def lean_encode(model, src_ids):
    """model.encode(src_ids) on the lean path: (memory Tensor (B, S, d), src_pad (B, S))."""
    src_ids = np.asarray(src_ids)
    src_pad = src_ids == model.config.pad_id
    x = _embed(model, src_ids, model.enc_embed_norm)
    for layer in model.encoder:
        x = _residual(layer.attn_block, x, lambda h: _self_attention(layer.self_attn, h, key_padding_mask=src_pad))
        x = _residual(layer.ffn_block, x, lambda h: _feed_forward(layer.ffn, h))
    if model.enc_final_norm is not None:
        x = _layer_norm(x, model.enc_final_norm)
    return Tensor(x), src_pad


def lean_decode(model, tgt_ids, memory, src_pad, cache, offset: int = 0):
    """model.decode(tgt_ids, memory, src_pad, cache, offset) on the lean path (cache from
    model.init_cache(), filled by this function only). Returns logits as a Tensor (B, T, V)."""
    tgt_ids = np.asarray(tgt_ids)
    mem = memory.data if isinstance(memory, Tensor) else np.asarray(memory)
    x = _embed(model, tgt_ids, model.dec_embed_norm, offset)
    for layer, lc in zip(model.decoder, cache):
        x = _residual(layer.self_block, x, lambda h: _self_attention(layer.self_attn, h, causal=True, cache=lc["self"]))
        x = _residual(layer.cross_block, x, lambda h: _cross_attention(layer.cross_attn, h, mem, src_pad, lc["cross"]))
        x = _residual(layer.ffn_block, x, lambda h: _feed_forward(layer.ffn, h))
    if model.dec_final_norm is not None:
        x = _layer_norm(x, model.dec_final_norm)
    return Tensor(_lm_head(model, x))


def _module_cache(cache) -> bool:
    """Was this cache filled by the module path (MultiHeadAttention keeps "k", "v")?"""
    return any("k" in part for layer in cache for part in layer.values())


class PackedTransformer(Seq2SeqTransformer):
    """The class of a packed Seq2SeqTransformer: ``encode`` and the cached ``decode`` run on
    the lean path when it applies (``lean_unsupported``), everything else as the base class."""

    def _lean_ok(self) -> bool:
        """lean_unsupported(self) is None, with the structural part worked out once (on first use)."""
        if self.training or self.record_states:
            return False
        plan = self.__dict__.get("_lean_plan")
        if plan is None:
            attns = self.attention_modules()
            states = [h for a in attns for h in (a.q_quant, a.k_quant, a.v_quant) if h is not None]
            static_ok = all(isinstance(h, (ElasticQuantizer, BiTElasticBinary, PerChannelQuantizer))
                            or isinstance(h, MinMaxQuantizer) and h.per_token for h in states)
            learned = [h for a in attns for h in (a.q_quant, a.k_quant, a.v_quant, a.p_quant)
                       if isinstance(h, (ElasticQuantizer, BiTElasticBinary, PerChannelQuantizer))]
            plan = self._lean_plan = (static_ok, attns, learned)
        static_ok, attns, learned = plan
        return static_ok and not any(a.record_attn for a in attns) and all(h.initialized[0] for h in learned)

    def encode(self, src_ids):
        if not self._lean_ok():
            return super().encode(src_ids)
        with no_grad():
            return lean_encode(self, src_ids)

    def decode(self, tgt_ids, memory, src_pad, cache=None, offset: int = 0):
        if cache is None or _module_cache(cache) or not self._lean_ok():
            return super().decode(tgt_ids, memory, src_pad, cache, offset)
        with no_grad():
            return lean_decode(self, tgt_ids, memory, src_pad, cache, offset)
