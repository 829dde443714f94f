"""The compiled decoder: a packed model handed to C (minitbt/_decoder.h), for fast decoding.

    model = pack_model(qat_model)            # the nn/ module tree with packed layers
    fast = compile_model(model)              # the same model as C structs (no copy of a weight
    fast.greedy(src_ids, max_len=64)         #   that the kernels read as they are)

``compile_model`` walks the module tree and describes each part in numbers and arrays: which
kernel each linear layer chose at pack time (``layer.kernel``, minitbt/packed/table.py), its
prepared weights, and each quantizer's kind and learned scale. The C then runs the same
equations as the nn/ forward (docs/kernels.md, "The compiled decoder"). The NumPy packed
model stays the reference; ``minitbt.decode.greedy`` and ``beam_search`` take either.

It also takes a float model or a fake-quantized (QAT) model: their linear layers run as float
matmuls. ``float_weights=True`` does that to a packed model's layers too (dequantized weights,
the same quantizers): the runtime with float32 weights that the benchmarks compare against.
"""
from __future__ import annotations

import numpy as np

from minitbt import kernels
from minitbt.nn.layers import LayerNorm, Linear
from minitbt.packed.layers import PackedEmbedding, PackedLinear
from minitbt.packed.table import FLOAT
from minitbt.quant import activation as A
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.quant.minmax import MinMaxQuantizer
from minitbt.quant.scale import SCALE_EPS

try:
    from minitbt._decoder import Decoder
except ImportError:            # no C compiler at install time: the NumPy packed model only
    Decoder = None

HAVE_DECODER = Decoder is not None

# the C enums of minitbt/_decoder.h
Q_NONE, Q_ELASTIC, Q_BIT, Q_MINMAX = 0, 1, 2, 3
K_FLOAT, K_SIGNADD, K_INT8, K_POPC = 0, 1, 2, 3
A_SIGNS, A_TERNARY, A_PLANES = 0, 1, 2
OP_AND, OP_XOR = 0, 1
ACTIVATIONS = {"relu": 0, "gelu": 1, "gelu_tanh": 2}


class NotCompilable(ValueError):
    """A part of the model that the compiled decoder does not run (the NumPy model does)."""


def _f32(a):
    return np.ascontiguousarray(np.asarray(a), dtype=np.float32)


def _quant(q, where: str):
    """An activation quantizer as the fields of tbt_quant (None: full precision)."""
    if q is None:
        return None
    if isinstance(q, MinMaxQuantizer):
        if not q.per_token:
            raise NotCompilable(f"{where}: a per-tensor min-max quantizer mixes tokens; decoding needs per token")
        return dict(kind=Q_MINMAX, is_signed=int(q.signed), bits=q.precision, qp=q.qp, centre=0, shift_min=0,
                    a=0.0, b=0.0, clip=float(q.clip) if q.clip is not None else 0.0)
    if isinstance(q, (A.ElasticQuantizer, A.BiTElasticBinary)):
        if not bool(q.initialized[0]):
            raise NotCompilable(f"{where}: its learned scale was never initialised (a model that never saw data)")
        if q.signed and q.precision == 1 and getattr(q, "binary_zero", "plus") != "plus":
            raise NotCompilable(f"{where}: binary_zero='zero' gives 1-bit codes in {{-1, 0, 1}}")
        a = float(np.maximum(np.float32(q.scale.data.reshape(-1)[0]), np.float32(SCALE_EPS)))
        if isinstance(q, A.BiTElasticBinary):
            return dict(kind=Q_BIT, is_signed=int(q.signed), bits=1, qp=1, centre=0, shift_min=0, a=a,
                        b=float(np.float32(q.offset.data.reshape(-1)[0])), clip=0.0)
        return dict(kind=Q_ELASTIC, is_signed=int(q.signed), bits=q.precision, qp=q.qp, centre=int(q.centre),
                    shift_min=int(q.shift_min), a=a, b=0.0, clip=0.0)
    raise NotCompilable(f"{where}: the compiled decoder has no {type(q).__name__} (per-token quantizers only)")


def _float_linear(K, N, w, bias, q, where):
    return dict(K=K, N=N, kernel=K_FLOAT, w=_f32(w), bias=None if bias is None else _f32(bias),
                quant=_quant(q, where))


def _dequantized(layer: PackedLinear) -> np.ndarray:
    """W_q (N, K) of a packed layer, as float32."""
    if layer.kind in ("ternary", "binary"):
        K = layer.in_features
        codes = kernels.unpack_bits(layer.planes[0], K).astype(np.float32) - kernels.unpack_bits(layer.planes[1], K)
        return codes * layer.w_scale[:, None] + layer.w_offset[:, None]
    return layer._w


def _linear(layer, where: str, float_weights: bool) -> dict:
    """One linear layer as the fields of tbt_linear (SubLN's LayerNorm included)."""
    out = _linear_body(layer, where, float_weights)
    out["in_norm"] = _norm(getattr(layer, "input_norm", None))
    return out


def _linear_body(layer, where, float_weights):
    if type(layer) is Linear:
        return _float_linear(layer.in_features, layer.out_features, layer.weight.data,
                             None if layer.bias is None else layer.bias.data, None, where)
    if isinstance(layer, QuantLinear):
        return _float_linear(layer.in_features, layer.out_features, layer.quantized_weight(),
                             None if layer.bias is None else layer.bias.data, layer.input_quantizer, where)
    if not isinstance(layer, PackedLinear):
        raise NotCompilable(f"{where}: {type(layer).__name__} is not a linear layer the compiled decoder knows")
    K, N, kernel, q = layer.in_features, layer.out_features, layer.kernel, layer.input_quantizer
    bias = None if layer.bias is None else _f32(layer.bias.data)
    if float_weights or kernel in (FLOAT, "bcq-lut"):
        return _float_linear(K, N, _dequantized(layer), bias, q, where)
    out = dict(K=K, N=N, bias=bias, quant=_quant(q, where), w_scale=_f32(layer.w_scale),
               w_offset=_f32(layer.w_offset), codes_sum=_f32(layer._codes_sum), has_offset=int(layer._w_offset))
    if kernel == "sign-add (float activations)":
        out.update(kernel=K_SIGNADD, sa_idx=layer._signadd.idx)
    elif kernel == "ternary x int8":
        p = layer._int8
        out.update(kernel=K_INT8, w_i2=p.w_i2, Kp2=4 * p.w_i2.shape[1], w_i8=p.w_i8, Kp8=p.w_i8.shape[1],
                   w_sum=p.w_sum)
    else:                                            # the popcount kernels: one generic call
        k = getattr(layer, "_planes_k", 1)
        popc = {                                     # kernel: (weight planes, op, activation planes, coef, row_coef, bias)
            "xnor-popcount": ("_signs", OP_XOR, A_SIGNS, [[-2]], None, K),        # K - 2 popc(a ^ w)
            "ternary x ternary planes": ("planes", OP_AND, A_TERNARY, [[1, -1], [-1, 1]], None, 0),
            "bit planes": ("planes", OP_AND, A_PLANES, [[2 ** j, -(2 ** j)] for j in range(k)], None, 0),
            "bit planes x signs": ("_signs", OP_AND, A_PLANES, [[-2 * 2 ** j] for j in range(k)],
                                   [2 ** j for j in range(k)], 0),
        }
        if kernel not in popc:
            raise NotCompilable(f"{where}: no compiled path for kernel {kernel!r}")
        wname, op, act, coef, row_coef, bias_k = popc[kernel]
        wb = getattr(layer, wname)
        wb = np.asarray(wb).view(np.ndarray)
        wb = wb.reshape(-1, N, wb.shape[-1])           # (pb, N, W)
        coef = np.array(coef, dtype=np.int32)
        out.update(kernel=K_POPC, wb=wb, pb=wb.shape[0], op=op, act=act, pa=coef.shape[0], coef=coef,
                   row_coef=None if row_coef is None else np.array(row_coef, dtype=np.int32), bias_k=bias_k)
    return out


def _norm(n):
    if n is None:
        return None
    if not isinstance(n, LayerNorm):
        raise NotCompilable(f"{type(n).__name__} is not a LayerNorm")
    return dict(g=_f32(n.weight.data), b=_f32(n.bias.data), eps=float(n.eps))


def _attn(mha, where, float_weights):
    return dict(q=_linear(mha.q_proj, f"{where}.q_proj", float_weights),
                k=_linear(mha.k_proj, f"{where}.k_proj", float_weights),
                v=_linear(mha.v_proj, f"{where}.v_proj", float_weights),
                o=_linear(mha.out_proj, f"{where}.out_proj", float_weights),
                qq=_quant(mha.q_quant, f"{where}.q_quant"), kq=_quant(mha.k_quant, f"{where}.k_quant"),
                vq=_quant(mha.v_quant, f"{where}.v_quant"), pq=_quant(mha.p_quant, f"{where}.p_quant"))


def describe(model, float_weights: bool = False) -> dict:
    """The model as plain numbers and arrays, the fields of minitbt/_decoder.h's structs.
    Raises NotCompilable, naming the part, for anything the C does not run."""
    cfg = model.config
    emb = model.embed
    m = dict(d=cfg.d_model, H=cfg.n_heads, V=cfg.vocab_size, max_len=cfg.max_len, n_enc=len(model.encoder),
             n_dec=len(model.decoder), pre_ln=int(cfg.pre_ln), act=ACTIVATIONS[cfg.activation],
             pad=cfg.pad_id, bos=cfg.bos_id, eos=cfg.eos_id, emb_mul=float(np.float32(model.embed_scale)))
    if isinstance(emb, PackedEmbedding) and emb.codes.dtype == np.int8:
        m.update(emb_codes=emb.codes, emb_scale=_f32(emb.row_scale), emb_offset=_f32(emb.row_offset))
    elif isinstance(emb, PackedEmbedding):            # binary-coding rows, kept dequantized
        m.update(emb_float=_f32(emb.codes * emb.row_scale[:, None] + emb.row_offset[:, None]))
    elif isinstance(emb, QuantEmbedding):
        m.update(emb_float=_f32(emb.quantized_weight()))
    else:
        m.update(emb_float=_f32(emb.weight.data))
    m["pos"] = _f32(model.pos.weight.data if model.pos is not None else model.pos_table)
    m.update(enc_emb_norm=_norm(model.enc_embed_norm), dec_emb_norm=_norm(model.dec_embed_norm),
             enc_final=_norm(model.enc_final_norm), dec_final=_norm(model.dec_final_norm))
    if model.lm_head is None:
        m.update(head_w=_f32(emb.weight.data))
    else:
        if type(model.lm_head) is not Linear:
            raise NotCompilable("lm_head: the compiled decoder keeps the LM head in full precision")
        m.update(head_w=_f32(model.lm_head.weight.data),
                 head_b=None if model.lm_head.bias is None else _f32(model.lm_head.bias.data))
    gate = getattr(model, "copy_gate", None)               # the pointer-generator's gate, full precision
    if gate is not None:
        if type(gate) is not Linear:
            raise NotCompilable("copy_gate: the compiled decoder keeps the copy gate in full precision")
        m.update(copy_w=_f32(gate.weight.data.reshape(-1)),
                 copy_b=float(gate.bias.data.reshape(-1)[0]) if gate.bias is not None else 0.0)
    enc, dec = [], []
    for i, layer in enumerate(model.encoder):
        enc.append(dict(self_attn=_attn(layer.self_attn, f"encoder.{i}.self_attn", float_weights),
                        self_norm=_norm(layer.attn_block.norm),
                        fc1=_linear(layer.ffn.fc1, f"encoder.{i}.ffn.fc1", float_weights),
                        fc2=_linear(layer.ffn.fc2, f"encoder.{i}.ffn.fc2", float_weights),
                        ffn_norm=_norm(layer.ffn_block.norm)))
    for i, layer in enumerate(model.decoder):
        dec.append(dict(self_attn=_attn(layer.self_attn, f"decoder.{i}.self_attn", float_weights),
                        self_norm=_norm(layer.self_block.norm),
                        cross_attn=_attn(layer.cross_attn, f"decoder.{i}.cross_attn", float_weights),
                        cross_norm=_norm(layer.cross_block.norm),
                        fc1=_linear(layer.ffn.fc1, f"decoder.{i}.ffn.fc1", float_weights),
                        fc2=_linear(layer.ffn.fc2, f"decoder.{i}.ffn.fc2", float_weights),
                        ffn_norm=_norm(layer.ffn_block.norm)))
    m["d_ff_max"] = max([L["fc1"]["N"] for L in enc + dec] + [1])
    return dict(model=m, encoder=enc, decoder=dec)


class CompiledModel:
    """A model run by the compiled decoder. ``minitbt.decode.greedy`` / ``beam_search`` call
    its ``greedy`` / ``beam_search`` (one source at a time, padding stripped)."""

    compiled = True

    def __init__(self, model, float_weights: bool = False):
        if not HAVE_DECODER:
            raise NotCompilable("minitbt._decoder was not built (no C compiler at install time): "
                                "use the NumPy packed model")
        self.config = model.config
        self.float_weights = float_weights
        self.decoder = Decoder(describe(model, float_weights))

    def _rows(self, src):
        src = np.asarray(src)
        if src.ndim != 2:
            raise ValueError(f"src must be (batch, length) token ids, got shape {src.shape}")
        for row in src:
            ids = row[row != self.config.pad_id]
            if ids.size == 0:
                raise ValueError("a source of padding only: nothing to encode")
            if ids.size > self.config.max_len:
                raise ValueError(f"a source of {ids.size} tokens exceeds max_len {self.config.max_len}")
            yield ids

    def greedy(self, src, max_len: int = 64, min_len: int = 0) -> list:
        """As minitbt.decode.greedy: the ids before <eos>, <pad> left out."""
        pad = self.config.pad_id
        return [[t for t in self.decoder.greedy(ids, max_len, min_len) if t != pad] for ids in self._rows(src)]

    def beam_search(self, src, beam_size: int = 4, max_len: int = 64, min_len: int = 0,
                    length_penalty: float = 1.0) -> list:
        return [self.decoder.beam(ids, beam_size, max_len, min_len, length_penalty) for ids in self._rows(src)]

    def step_logits(self, src_ids, tokens) -> np.ndarray:
        """(T, V) logits of one source (1-D ids) fed ``tokens`` (<bos> first), step by step."""
        (ids,) = self._rows(np.asarray(src_ids)[None])
        return self.decoder.step_logits(ids, tokens)


def compile_model(model, float_weights: bool = False) -> CompiledModel:
    """The compiled decoder of ``model`` (packed, fake-quantized or float). NotCompilable names
    the part that it cannot run; the NumPy model runs everything."""
    return CompiledModel(model, float_weights)
