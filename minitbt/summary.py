"""Model summary by bit width: parameters, memory and multiply-accumulates per precision.

Modelled on larq's ``larq.models.summary`` (Geiger & Team 2020): one row per layer, then totals.

    >>> import minitbt
    >>> print(minitbt.summary(student))                  # the table, as text
    >>> rows = minitbt.summary.summary_table(student)    # the raw numbers, one dict per row

**Rows.** Every Linear/QuantLinear, Embedding/QuantEmbedding and LayerNorm, the two matmuls of every
attention (scores  S = Q K^T  and  O = P V, no weights: both operands are activations), and the
output projection (LM head). For a matmul row "W bits" is the right operand (K or V) and "A bits"
the left one (Q or P).

**Parameters per bit width.** A weight counts at its quantizer's precision (1 binary, 2 ternary:
log2(3) = 1.58 bits of information, stored in 2; k bits), everything else (biases, LayerNorms,
positions, learned activation scales) at 32. A frequency-aware embedding (FrequencyAwareBCQ, k_r
bits for row r) counts each row at its own bits; its "W" column shows the mean bits per weight,
and a footer line the rows per bit width. The output projection of a Seq2SeqTransformer is tied
to ``embed.weight`` and runs in full precision (TBT's placement), so once the embedding is quantized
the deployed model must keep the float table *as well as* its low-bit codes: the LM head row then
stores V*d float32 values. (In the FP model the head shares the table: 0 extra values.)

**Memory.**
    packed  = sum_b  n_b * b bits  +  32 bits * (number of scales/offsets the weight quantizers store)
              (binary 1 bit per weight, ternary 2 bits, k-bit k bits, FP 32 bits; scales = one per row
              for per-row quantizers, one per tensor otherwise, k per row for k-bit binary coding)
    float32 = 32 bits * every parameter of the model, i.e. the same architecture in full precision
    compression ratio = float32 / packed

**MACs** (multiply-accumulates) for one example with ``src_len`` source and ``tgt_len`` target tokens,
teacher-forced (every position computed, as in training or the full forward):

    Linear (in -> out) on N tokens:  N * in * out     (encoder: N = S; decoder: N = T, except the
                                                        cross-attention K and V projections: N = S)
    attention, Tq queries x Tk keys: QK^T  H * Tq * Tk * d_h = Tq * Tk * d,   PV  the same
                                     (encoder self Tq = Tk = S, decoder self T x T, cross T x S)
    LM head:                         T * d * V
    LayerNorm, embedding lookups, residuals, softmax: no MACs (elementwise or gathers)

The causal mask hides half the decoder self-attention; a KV-cache decoder computes only
T(T+1)/2 of the T^2 query-key pairs, so the count here is the dense forward's.
Each matmul falls in a precision class, by the bits (b1, b2) of its two operands (FP = 32):

    "binary x binary"           both 1 bit                       xnor / and + popcount  (W1A1)
    "ternary/binary x low-bit"  one side <= 2 bits, other <= 4    bit-plane popcounts    (W1-2 x A1-4)
    "x int8"                    both quantized, <= 8 bits         integer dot products   (W1-2 x A8, W8A8)
    "float"                     any full-precision side           float multiply-add
"""
from __future__ import annotations

import sys
import types

import numpy as np

from minitbt.nn.attention import MultiHeadAttention
from minitbt.nn.layers import Embedding, LayerNorm, Linear
from minitbt.quant.layers import QuantEmbedding, QuantLinear

FP = 32                                          # bits of a full-precision value
MAC_CLASSES = ("binary x binary", "ternary/binary x low-bit", "x int8", "float")
BIT_LABELS = {1: "1-bit (binary)", 2: "2-bit (ternary, 1.58)", 32: "32-bit float"}


def mac_class(bits_a, bits_b) -> str:
    """The precision class of a matmul whose operands have ``bits_a`` and ``bits_b`` bits (None = FP)."""
    a = FP if bits_a is None else int(bits_a)
    b = FP if bits_b is None else int(bits_b)
    lo, hi = min(a, b), max(a, b)
    if hi >= 16:
        return "float"
    if hi == 1:
        return "binary x binary"
    if lo <= 2 and hi <= 4:
        return "ternary/binary x low-bit"
    if hi <= 8:
        return "x int8"
    return "float"


def bit_label(bits: int) -> str:
    return BIT_LABELS.get(bits, f"{bits}-bit")


def _bits(q):
    """A quantizer's precision, or 32 when there is none (full precision)."""
    return FP if q is None else int(q.precision)


def _qparams(*quantizers) -> int:
    """Learned values a set of quantizers owns (elastic scales, BiT offsets): float32 parameters."""
    return sum(p.size for q in quantizers if q is not None for p in q.parameters())


def _weight_scales(layer) -> int:
    """How many float32 statistics (scales, non-zero offsets) the packed form of a weight stores."""
    wq = getattr(layer, "weight_quantizer", None)
    if wq is None:
        return 0
    if any(True for _ in wq.parameters()):                 # a learned scale (SEQ): counted by _qparams
        return 0
    if getattr(wq, "row_bits", None) is not None:          # k_r scales for row r (binary coding)
        return int(np.sum(wq.row_bits, dtype=np.int64))
    qc = wq.codes(layer.weight.data)
    n = int(np.size(qc.scale))
    if np.any(np.asarray(qc.offset) != 0):
        n += int(np.size(qc.offset))
    return n


def _row(name, kind, output, w_bits, a_bits, params, scales=0, float_values=None, macs=0, mac_cls=None):
    """One row; ``params`` maps bits -> number of values stored at that precision."""
    params = {b: int(n) for b, n in params.items() if n}
    packed_bits = sum(b * n for b, n in params.items()) + FP * scales
    float_values = sum(params.values()) if float_values is None else float_values
    return {"name": name, "type": kind, "output": tuple(output), "w_bits": w_bits, "a_bits": a_bits,
            "params": params, "scales": int(scales), "packed_bytes": packed_bits / 8,
            "float32_bytes": 4 * float_values, "macs": int(macs),
            "mac_class": mac_cls if macs else None}


def _tokens(name: str, S: int, T: int) -> int:
    """Tokens a layer runs on: encoder S, decoder T (cross-attention K/V projections read the source)."""
    if name.startswith("decoder"):
        return S if (".cross_attn.k_proj" in name or ".cross_attn.v_proj" in name) else T
    if name.startswith(("dec_", "lm_head")):
        return T
    return S


def _attn_lengths(name: str, S: int, T: int):
    if ".cross_attn" in name:
        return T, S
    return (T, T) if name.startswith("decoder") else (S, S)


def summary_table(model, src_len: int = 32, tgt_len: int = 32) -> list:
    """One dict per row (see the module docstring): name, type, output (shape for one example),
    w_bits, a_bits, params {bits: count}, scales, packed_bytes, float32_bytes, macs, mac_class."""
    S, T = int(src_len), int(tgt_len)
    rows, seen, pending = [], set(), {}       # pending: an attention's two matmul rows, placed before out_proj

    def claim(*tensors):
        for t in tensors:
            if t is not None:
                seen.add(id(t))

    for name, mod in model.named_modules():
        label = name or type(mod).__name__
        if isinstance(mod, (QuantLinear, Linear)):
            wq, xq = getattr(mod, "weight_quantizer", None), getattr(mod, "input_quantizer", None)
            wb, ab = _bits(wq), _bits(xq)
            n = _tokens(name, S, T)
            bias = mod.bias.size if mod.bias is not None else 0
            if name.endswith(".out_proj"):
                rows += pending.pop(name[: -len(".out_proj")], [])
            params = {wb: mod.weight.size}
            params[FP] = params.get(FP, 0) + bias + _qparams(wq, xq)
            rows.append(_row(label, type(mod).__name__, (n, mod.out_features), wb, ab, params,
                             _weight_scales(mod), float_values=mod.weight.size + bias,
                             macs=n * mod.in_features * mod.out_features, mac_cls=mac_class(wb, ab)))
            claim(mod.weight, mod.bias, *(p for q in (wq, xq) if q is not None for p in q.parameters()))
        elif isinstance(mod, (QuantEmbedding, Embedding)):
            wq = getattr(mod, "weight_quantizer", None)
            wb = _bits(wq)
            n = S + T if name in ("embed", "pos") else S          # shared by encoder and decoder
            params = {wb: mod.weight.size}
            row_bits = getattr(wq, "row_bits", None)
            if row_bits is not None:                              # bits per row: each row at its own
                ks, rows_k = np.unique(np.asarray(row_bits), return_counts=True)
                params = {int(k): int(c) * mod.dim for k, c in zip(ks, rows_k)}
                wb = round(float(np.mean(row_bits)), 3)
            params[FP] = params.get(FP, 0) + _qparams(wq)
            rows.append(_row(label, type(mod).__name__, (n, mod.dim), wb, None, params, _weight_scales(mod),
                             float_values=mod.weight.size))
            claim(mod.weight, *(wq.parameters() if wq is not None else ()))
        elif type(mod).__name__ == "PackedLinear":       # a packed model: the kernel is the layer's own
            xq = mod.input_quantizer
            wb = {"binary": 1, "ternary": 2, "dense": FP}.get(mod.kind)
            wb = int(mod.bcq_scale.shape[0]) if mod.kind == "bcq" else wb
            ab, n = _bits(xq), _tokens(name, S, T)
            K, N = mod.in_features, mod.out_features
            bias = mod.bias.size if mod.bias is not None else 0
            scales = sum(getattr(mod, a).size for a in ("w_scale", "bcq_scale") if hasattr(mod, a))
            scales += mod.w_offset.size if mod.kind in ("binary", "ternary") and mod.w_offset.any() else 0
            if name.endswith(".out_proj"):
                rows += pending.pop(name[: -len(".out_proj")], [])
            params = {wb: K * N}
            params[FP] = params.get(FP, 0) + bias + _qparams(xq)
            rows.append(_row(label, "PackedLinear", (n, N), wb, ab, params, scales if mod.kind != "dense" else 0,
                             float_values=K * N + bias, macs=n * K * N, mac_cls=mod.kernel))
            claim(mod.bias, *(xq.parameters() if xq is not None else ()))
        elif type(mod).__name__ == "PackedEmbedding":
            V, d = mod.num_embeddings, mod.dim
            wb = 2 if np.isin(mod.codes, (-1, 0, 1)).all() else 8
            rows.append(_row(label, "PackedEmbedding", (S + T, d), wb, None, {wb: V * d},
                             mod.row_scale.size + (mod.row_offset.size if np.any(mod.row_offset) else 0),
                             float_values=V * d))
            claim(mod.weight)
        elif isinstance(mod, LayerNorm):
            rows.append(_row(label, "LayerNorm", (_tokens(name, S, T), mod.dim), None, FP,
                             {FP: mod.weight.size + mod.bias.size}))
            claim(mod.weight, mod.bias)
        elif isinstance(mod, MultiHeadAttention):
            tq, tk = _attn_lengths(name, S, T)
            d, H = mod.d_model, mod.n_heads
            qb, kb, vb, pb = (_bits(getattr(mod, f"{h}_quant")) for h in "qkvp")
            pending[name] = [
                _row(f"{label}.scores", "MatMul QK^T", (H, tq, tk), kb, qb, {FP: _qparams(mod.q_quant, mod.k_quant)},
                     float_values=0, macs=tq * tk * d, mac_cls=mac_class(qb, kb)),
                _row(f"{label}.context", "MatMul PV", (H, tq, mod.d_head), vb, pb,
                     {FP: _qparams(mod.p_quant, mod.v_quant)}, float_values=0, macs=tq * tk * d,
                     mac_cls=mac_class(pb, vb))]
            for h in "qkvp":
                q = getattr(mod, f"{h}_quant")
                claim(*(q.parameters() if q is not None else ()))
    rows += [r for pair in pending.values() for r in pair]

    # the output projection (LM head): tied to the embedding, or a separate Linear (already a row)
    emb = getattr(model, "embed", None)
    if getattr(model, "lm_head", 0) is None and (isinstance(emb, Embedding) or type(emb).__name__ == "PackedEmbedding"):
        V, d = emb.num_embeddings, emb.dim
        quantized = getattr(emb, "weight_quantizer", None) is not None or type(emb).__name__ == "PackedEmbedding"
        extra = V * d if quantized else 0                  # the float table the LM head reads
        rows.append(_row("output_projection (tied embed.weight)", "Linear (tied)", (T, V), FP, FP,
                         {FP: extra}, float_values=0, macs=T * d * V, mac_cls="float"))
    # anything the walk above did not see (a custom layer): full precision, no MACs counted
    for pname, p in model.named_parameters():
        if id(p) not in seen:
            rows.append(_row(pname, "Parameter", p.shape, None, None, {FP: p.size}))
    return rows


def totals(rows) -> dict:
    """Sums over the rows: params per bit width, memory, compression, MACs per precision class."""
    params, macs = {}, {c: 0 for c in MAC_CLASSES}
    for r in rows:
        for b, n in r["params"].items():
            params[b] = params.get(b, 0) + n
        if r["macs"]:                                      # a packed layer's class is its kernel
            macs[r["mac_class"]] = macs.get(r["mac_class"], 0) + r["macs"]
    packed = sum(r["packed_bytes"] for r in rows)
    fp32 = sum(r["float32_bytes"] for r in rows)
    return {"params": dict(sorted(params.items())), "n_params": sum(params.values()),
            "scales": sum(r["scales"] for r in rows), "packed_bytes": packed, "float32_bytes": fp32,
            "compression": fp32 / packed if packed else float("nan"), "macs": macs,
            "total_macs": sum(macs.values())}


# ---- text ----------------------------------------------------------------------------------
def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


def _human(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e4:
        return f"{n / 1e3:.1f} k"
    return f"{n:.0f}"


_SHORT = {"binary x binary": "bin x bin", "ternary/binary x low-bit": "tern x low", "x int8": "x int8",
          "float": "float"}


def summary(model, src_len: int = 32, tgt_len: int = 32) -> str:
    """The per-layer table and the totals, as text (print it)."""
    rows = summary_table(model, src_len, tgt_len)
    tot = totals(rows)
    widths = sorted(tot["params"])
    recipe = getattr(model, "quant_recipe", None)
    title = type(model).__name__ + (f" [{recipe.name}]" if recipe is not None else " [full precision]")
    head = ["Layer", "Type", "Output", "W", "A"] + [f"{b}-bit" for b in widths] + \
           ["Packed", "Float32", "MACs", "MAC class"]
    body = []
    for r in rows:
        body.append([r["name"], r["type"], "x".join(str(s) for s in r["output"]),
                     "-" if r["w_bits"] is None else str(r["w_bits"]),
                     "-" if r["a_bits"] is None else str(r["a_bits"])]
                    + [str(r["params"].get(b, 0)) if r["params"].get(b, 0) else "." for b in widths]
                    + [_human_bytes(r["packed_bytes"]), _human_bytes(r["float32_bytes"]),
                       _human(r["macs"]) if r["macs"] else ".", _SHORT.get(r["mac_class"], r["mac_class"] or "")])
    sums = ["Total", "", "", "", ""] + [str(tot["params"][b]) for b in widths] + \
           [_human_bytes(tot["packed_bytes"]), _human_bytes(tot["float32_bytes"]), _human(tot["total_macs"]), ""]
    cols = list(zip(head, *body, sums))
    w = [max(len(c) for c in col) for col in cols]
    left = {0, 1, len(head) - 1}

    def fmt(cells):
        return "  ".join(c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(cells)).rstrip()

    rule = "-" * len(fmt(head))
    lines = [f"{title}: one example, {src_len} source x {tgt_len} target tokens (W, A: bits of the weight "
             f"and input sides; matmuls: right and left operand)", rule, fmt(head), rule]
    lines += [fmt(b) for b in body] + [rule, fmt(sums), rule]
    n_train = sum(p.size for p in model.parameters())
    lines.append(f"{'Parameters':<30}" + "  ".join(f"{bit_label(b)}: {tot['params'][b]:,}" for b in widths)
                 + f"   (stored {tot['n_params']:,}; trainable {n_train:,})")
    lines.append(f"{'Scales and offsets':<30}{tot['scales']:,} float32 values stored with the low-bit weights")
    for r in rows:                                        # mixed bits per row (frequency-aware embedding)
        if isinstance(r["w_bits"], float):
            per = ", ".join(f"{b}-bit {n // r['output'][1]:,}" for b, n in sorted(r["params"].items(), reverse=True)
                            if b != FP)
            lines.append(f"{'Bits ' + r['name']:<30}{r['w_bits']:.3g} per weight on average (rows: {per})")
    lines.append(f"{'Memory, packed':<30}{_human_bytes(tot['packed_bytes'])}  ({tot['packed_bytes']:,.0f} bytes)")
    lines.append(f"{'Memory, float32':<30}{_human_bytes(tot['float32_bytes'])}  ({tot['float32_bytes']:,.0f} bytes)")
    lines.append(f"{'Compression':<30}{tot['compression']:.2f}x")
    total = max(tot["total_macs"], 1)
    for c in list(MAC_CLASSES) + sorted(set(tot["macs"]) - set(MAC_CLASSES)):   # then a packed model's kernels
        n = tot["macs"][c]
        lines.append(f"{'MACs ' + c:<30}{n:>14,}  {100 * n / total:5.1f}%")
    lines.append(f"{'MACs total':<30}{tot['total_macs']:>14,}  ({tot['total_macs'] / max(tgt_len, 1):,.0f} "
                 f"per target token)")
    return "\n".join(lines)


# ``minitbt.summary`` is this module; calling it calls summary(): both ``minitbt.summary(model)``
# and ``minitbt.summary.summary_table(model)`` work (a module subclass with __call__, as the
# standard library's types.ModuleType allows).
class _CallableModule(types.ModuleType):
    def __call__(self, model, src_len: int = 32, tgt_len: int = 32) -> str:
        return summary(model, src_len, tgt_len)


sys.modules[__name__].__class__ = _CallableModule
