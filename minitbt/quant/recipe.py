"""Quantization recipes: "E-W-A" presets and ``quantize_model`` (TBT's placement).

A recipe names the bits of the token **E**mbedding, the linear **W**eights and the **A**ctivations,
and a method that picks the quantizer families:

    spec                      = [method-]E-W-A          e.g. "2-2-8", "twn-2-2-2", "bit-1-1-1"
    bits >= 16                = full precision (no quantizer at that site)

    method        weights (W=1 / W=2 / W>=3)                 activations (A<8; A=8 -> SymmetricA8 per token)
    tbt (default) TBTBinary / TBTTernary per row / AbsMax     ElasticQuantizer (learned a, centred signed)
    tbt-code      as tbt, released code: centre=False,        ElasticQuantizer(centre=False, lsq_grad_scale,
                  identity STE                                shift_min on the FFN's unsigned input,
                                                              init="code", binary_zero="zero");
                                                              A=8 unsigned sites: a8_unsigned="minmax"
    twn, bwn      BWN / TWN (per tensor; embedding per row)   MinMaxQuantizer (dynamic, not learned)   [baseline]
    twn+elastic   BWN / TWN                                   ElasticQuantizer   [ablation: + learned activations]
    bwn+elastic   (same as twn+elastic)
    stats         TBTBinary / TBTTernary                      MinMaxQuantizer    [ablation: + statistics weights]
    bitnet        BWN(centre) / AbsMean b1.58 / AbsMax        PerTokenAbsMax at every A (k-bit absmax)
    bit           BWN(centre, BiT) / TWN / AbsMax             A=1: BiTElasticBinary (two-set, learned offset);
                                                              else ElasticQuantizer(centre=False)
    lat           BWN / LATWeight (TWN until a curvature)      MinMaxQuantizer
    bcq           BinaryCodingWeight(k) per row               ElasticQuantizer
    fqt           BWN(per row) / AbsMaxWeight per row         PerChannelQuantizer (learned per-channel,
                                                              unsigned after ReLU / softmax); A=8 too
    paretoq       SEQWeight (learned scale per row:           ElasticQuantizer (as tbt)
                  binary / stretched ternary {-2/3,0,2/3}a)

Options (QuantRecipe fields; docs/quantization.md, "Released code vs paper: the options", says
why each default): lsq_grad_scale, elastic_init, a8_unsigned, binary_zero,
centre, weight_ste, shift_min, a8_per_token, a8_clip; subln (BitDistill's SubLN, Wu et al. 2025: a
LayerNorm on the inputs of out_proj and fc2, inside their QuantLinear, before the input quantizer;
fc2's input is then signed). ``QuantRecipe.parse_options("lsq_grad_scale=1,...")``
reads them from text (the training option --quant-options).

Frequency-aware embedding bits (Chung et al. 2020, method bcq): ``embed_schedule="4:0.05/2:0.2/1"``
makes the embedding a FrequencyAwareBCQ (minitbt/quant/freq_embedding.py), E = the schedule's largest
bits; ``quantize_model(..., token_counts=counts)`` ranks its rows (the state dict keeps the ranking).

The ablation of TBT (Table "2-2-2", CNN/DM R1 12.92 -> 13.34 -> 19.34 -> 41.03) is ``ABLATIONS["2-2-2"]``:
twn-2-2-2 (baseline), twn+elastic-2-2-2, stats-2-2-2, tbt-2-2-2 (= "2-2-2"); at 1-1-1 with bwn.

Placement (TBT, docs/methods.md section 1), applied by ``quantize_model`` to a Seq2SeqTransformer:
- Q, K, V, O projections and FFN fc1, fc2: weights (W bits) and their inputs (A bits, signed;
  fc2's input after the ReLU: unsigned) -> QuantLinear
- the token embedding, per row (E bits) -> QuantEmbedding; its ``.weight`` stays the latent FP
  Parameter, so the tied output projection (LM head) stays full precision
- attention: Q (already scaled by d_h^-0.5), K, V states before the two matmuls (signed) and the
  attention probabilities (unsigned) via MultiHeadAttention.q_quant/k_quant/v_quant/p_quant
- full precision: scores, softmax, LayerNorms, biases, residuals, positions, LM head.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields, replace

from minitbt.nn.attention import MultiHeadAttention
from minitbt.nn.layers import Embedding, LayerNorm, Linear
from minitbt.nn.transformer import FeedForward
from minitbt.quant import activation as A
from minitbt.quant import minmax as M
from minitbt.quant import weight as W
from minitbt.quant.base import Quantizer
from minitbt.quant.freq_embedding import FrequencyAwareBCQ, parse_schedule
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.quant.learned_weight import SEQWeight

FP_BITS = 16   # bits >= this mean "leave in full precision"

# method -> (weight family, activation family)
METHODS = {
    "tbt": ("tbt", "elastic"),
    "tbt-code": ("tbt", "elastic"),
    "twn": ("twn", "minmax"),
    "bwn": ("twn", "minmax"),
    "twn+elastic": ("twn", "elastic"),
    "bwn+elastic": ("twn", "elastic"),
    "stats": ("tbt", "minmax"),
    "bitnet": ("bitnet", "absmax"),
    "bit": ("bit", "bit"),
    "lat": ("lat", "minmax"),
    "bcq": ("bcq", "elastic"),
    "fqt": ("fqt", "fqt"),
    "paretoq": ("seq", "elastic"),
}

# named presets (every "[method-]E-W-A" string is accepted; these are the ones the docs discuss)
PRESETS = {
    "2-2-8": "TBT, ternary weights and embedding, 8-bit activations",
    "2-2-2": "TBT, all ternary",
    "1-1-8": "TBT, binary weights and embedding, 8-bit activations",
    "1-1-1": "TBT, all binary",
    "8-8-8": "8-bit everything (a sanity check close to FP)",
    "twn-2-2-8": "TWN baseline, 8-bit activations", "twn-2-2-2": "TWN baseline, fixed (min-max) activations",
    "bwn-1-1-8": "BWN baseline, 8-bit activations", "bwn-1-1-1": "BWN baseline, fixed (min-max) activations",
    "twn+elastic-2-2-2": "ablation: TWN weights + TBT learned activations",
    "stats-2-2-2": "ablation: TBT statistics weights + fixed activations",
    "bwn+elastic-1-1-1": "ablation: BWN weights + TBT learned activations",
    "stats-1-1-1": "ablation: TBT statistics weights + fixed activations",
    "tbt-code-2-2-2": "TBT with the released code's options",
    "bit-1-1-1": "BiT: two-set elastic binary activations with learned offsets",
    "bit-1-1-2": "BiT's intermediate W1A2 student (multi-distillation)",
    "bitnet-8-2-8": "BitNet b1.58: absmean ternary weights, per-token int8 activations",
    "lat-2-2-8": "TernaryBERT: loss-aware ternarization (needs attach_lat_curvature)",
    "bcq-3-3-32": "Chung et al.: 3-bit binary-coding weights, FP activations",
    "fqt-8-8-8": "FQT: 8-bit, learned per-channel activation scales",
    "fqt-4-4-4": "FQT: 4-bit",
    "paretoq-2-2-2": "ParetoQ's stretched elastic ternary weights (learned scales) with TBT activations",
}

ABLATIONS = {
    "2-2-2": [("TWN baseline", "twn-2-2-2"), ("+ learned activations", "twn+elastic-2-2-2"),
              ("+ statistics weights", "stats-2-2-2"), ("+ both (TBT)", "tbt-2-2-2")],
    "1-1-1": [("BWN baseline", "bwn-1-1-1"), ("+ learned activations", "bwn+elastic-1-1-1"),
              ("+ statistics weights", "stats-1-1-1"), ("+ both (TBT)", "tbt-1-1-1")],
}

# The released TBT code's choices, all at once: method "tbt-code" (docs/quantization.md)
TBT_CODE = dict(centre=False, weight_ste="identity", lsq_grad_scale=True, shift_min=True,
                elastic_init="code", a8_unsigned="minmax", binary_zero="zero")
A8_UNSIGNED = ("symmetric", "minmax")
_NOT_OPTIONS = ("embed_bits", "weight_bits", "act_bits", "method", "name")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

_SPEC = re.compile(r"^(?:(?P<method>.+)-)?(?P<e>\d+)-(?P<w>\d+)-(?P<a>\d+)$")


@dataclass
class QuantRecipe:
    """What to quantize with what. ``QuantRecipe.parse("2-2-8", method="tbt")`` builds one."""
    embed_bits: int = 2
    weight_bits: int = 2
    act_bits: int = 8
    method: str = "tbt"
    weights: str = "tbt"            # weight family (see METHODS)
    activations: str = "elastic"    # activation family
    centre: bool = True             # TBT: mean-centre weights and signed activations (paper); code: False
    weight_ste: str = "clipped"     # TBT weights: "clipped" (paper) or "identity" (code)
    lsq_grad_scale: bool = True     # scale dL/da by 1/sqrt(N Qp) (elastic, BiT, FQT scales): LSQ, the code,
    #                                 and the pilot's winner; False: the paper's unscaled gradient
    shift_min: bool = False         # code: unsigned elastic quantizers shift by the per-token minimum
    a8_per_token: bool = True       # SymmetricA8 per token (decoding-safe) or per tensor (paper)
    a8_clip: float = 2.5            # SymmetricA8's clipping range (None: no clipping)
    elastic_init: str = "levels"    # first-batch a: Qp of the levels in use; "code": the released rule
    a8_unsigned: str = "symmetric"  # A8 at probabilities and fc2's input: SymmetricA8; "minmax": 255 levels
    binary_zero: str = "plus"       # signed 1-bit activations: exact 0 -> +a; "zero": -> 0 (code; no packing)
    subln: bool = False             # BitDistill's SubLN: a LayerNorm before out_proj's and fc2's input quantizers
    embed_schedule: str = ""        # bcq: frequency-aware embedding bits, e.g. "4:0.05/2:0.2/1" ("": E bits for all)
    name: str = field(default="")

    def __post_init__(self):
        families_w = {w for w, _ in METHODS.values()}
        families_a = {a for _, a in METHODS.values()}
        for name in ("embed_bits", "weight_bits", "act_bits"):
            bits = getattr(self, name)
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
                raise ValueError(f"{name} must be an integer from 1 to 32 (>= {FP_BITS}: full precision), got {bits!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: use one of {sorted(METHODS)}")
        if self.weights not in families_w:
            raise ValueError(f"unknown weight family {self.weights!r}: use one of {sorted(families_w)}")
        if self.activations not in families_a:
            raise ValueError(f"unknown activation family {self.activations!r}: use one of {sorted(families_a)}")
        if self.weight_ste not in ("clipped", "identity"):
            raise ValueError(f"weight_ste must be 'clipped' or 'identity', got {self.weight_ste!r}")
        if self.a8_clip is not None and not self.a8_clip > 0:
            raise ValueError(f"a8_clip must be > 0 or None, got {self.a8_clip!r}")
        for name, allowed in (("elastic_init", A.ELASTIC_INIT), ("a8_unsigned", A8_UNSIGNED),
                              ("binary_zero", A.BINARY_ZERO)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.embed_schedule:
            top = max(k for k, _ in parse_schedule(self.embed_schedule))
            if self.weights != "bcq":
                raise ValueError(f"embed_schedule is frequency-aware binary coding: it needs method bcq, "
                                 f"not weights {self.weights!r}")
            if self.embed_bits != top:
                raise ValueError(f"embed_schedule {self.embed_schedule!r} gives at most {top} bits: the recipe's "
                                 f"E must be {top}, got {self.embed_bits}")

    @classmethod
    def parse(cls, spec: str, method: str = None, **overrides) -> "QuantRecipe":
        m = _SPEC.match(spec)
        if m is None:
            raise ValueError(f"recipe {spec!r} is not '[method-]E-W-A' (presets: {', '.join(PRESETS)})")
        given = m.group("method")
        if given and method and given != method:
            raise ValueError(f"recipe {spec!r} names method {given!r} but method={method!r} was given")
        method = given or method or "tbt"
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {sorted(METHODS)}")
        wf, af = METHODS[method]
        r = cls(int(m.group("e")), int(m.group("w")), int(m.group("a")), method, wf, af,
                name=f"{method}-{m.group('e')}-{m.group('w')}-{m.group('a')}")
        if method == "tbt-code":
            r = replace(r, **TBT_CODE)
        for b in (r.embed_bits, r.weight_bits, r.act_bits):
            if b < 1:
                raise ValueError(f"bits must be >= 1 in {spec!r}")
        return replace(r, **overrides)

    @classmethod
    def parse_options(cls, text: str) -> dict:
        """"name=value,name=value" -> {field: typed value}, the overrides of --quant-options.

        Any QuantRecipe field but the bits, the method and the name (those come from the recipe
        spec): booleans as 1/0/true/false/yes/no, a8_clip as a number or "none", the rest as text,
        e.g. "lsq_grad_scale=1,binary_zero=zero" or "weights=seq". A bad name or value is a ValueError."""
        known = {f.name: f for f in fields(cls) if f.name not in _NOT_OPTIONS}
        out = {}
        for item in (part.strip() for part in (text or "").split(",")):
            if not item:
                continue
            name, eq, value = (s.strip() for s in item.partition("="))
            if not eq or name not in known:
                raise ValueError(f"quant option {item!r} is not name=value with a name from {sorted(known)}")
            default = known[name].default
            if isinstance(default, bool):
                low = value.lower()
                if low not in _BOOLS:
                    raise ValueError(f"quant option {name} takes 1/0, true/false or yes/no, got {value!r}")
                out[name] = _BOOLS[low]
            elif name == "a8_clip":
                try:
                    out[name] = None if value.lower() == "none" else float(value)
                except ValueError:
                    raise ValueError(f"quant option a8_clip takes a number or none, got {value!r}") from None
            else:
                out[name] = value
        return out

    # ---- quantizer factories ------------------------------------------------------------
    def weight_quantizer(self, bits: int, embedding: bool = False, rows: int = None):
        """The quantizer for a weight matrix at ``bits`` (embedding: per row); ``rows``, the
        matrix's number of rows, sizes the learned per-row scales of the "seq" family."""
        if bits >= FP_BITS:
            return None
        fam = self.weights
        if embedding and self.embed_schedule:
            return FrequencyAwareBCQ(self.embed_schedule, rows)
        if fam == "bcq":
            return W.BinaryCodingWeight(bits)
        if bits >= 3:
            return W.AbsMaxWeight(bits, per_row=embedding or fam in ("tbt", "fqt", "seq"))
        if fam == "seq":
            return SEQWeight(bits, rows)
        if fam == "tbt":
            cls = W.TBTBinaryWeight if bits == 1 else W.TBTTernaryWeight
            return cls(per_row=True, centre=self.centre, ste=self.weight_ste)
        if bits == 1:
            centre = fam in ("bit", "bitnet")
            return W.BWNWeight(per_row=embedding or fam == "fqt", centre=centre)
        if fam == "bitnet":
            return W.AbsMeanWeight(per_row=embedding)
        if fam == "lat":
            return W.LATWeight(per_row=embedding)
        if fam == "fqt":
            return W.AbsMaxWeight(2, per_row=True)
        return W.TWNWeight(per_row=embedding)

    def act_quantizer(self, signed: bool = True, channels: int = None, probabilities: bool = False):
        """The quantizer for an activation (``signed=False``: ReLU outputs, probabilities).

        ``shift_min`` is never used on attention probabilities: causal masking puts exact zeros
        into the rows of the full forward that a step-by-step decoder never sees, so a per-row
        minimum would differ between the two (and it is ~0 for a softmax anyway)."""
        bits, fam = self.act_bits, self.activations
        if bits >= FP_BITS:
            return None
        if fam == "fqt":
            return A.PerChannelQuantizer(channels, bits, signed, lsq_grad_scale=self.lsq_grad_scale)
        if fam == "absmax":
            return M.PerTokenAbsMax(bits)
        if bits == 8:
            if not signed and self.a8_unsigned == "minmax":      # 255 levels from 0 to max (see the class)
                return M.MinMaxQuantizer(8, signed=False, clip=self.a8_clip, per_token=self.a8_per_token)
            return M.SymmetricA8(clip=self.a8_clip, per_token=self.a8_per_token)
        if fam == "minmax":
            return M.MinMaxQuantizer(bits, signed)
        if fam == "bit" and bits == 1:
            return A.BiTElasticBinary(signed, lsq_grad_scale=self.lsq_grad_scale, binary_zero=self.binary_zero)
        centre = self.centre and fam != "bit"
        return A.ElasticQuantizer(bits, signed, centre=centre, lsq_grad_scale=self.lsq_grad_scale,
                                  shift_min=self.shift_min and not signed and not probabilities,
                                  init=self.elastic_init, binary_zero=self.binary_zero)


def _as_recipe(recipe, method=None, **overrides) -> QuantRecipe:
    if isinstance(recipe, QuantRecipe):
        if method and method != recipe.method:
            raise ValueError(f"recipe has method {recipe.method!r} but method={method!r} was given")
        return replace(recipe, **overrides)
    return QuantRecipe.parse(recipe, method, **overrides)


def quantize_model(model, recipe="2-2-8", method: str = None, inplace: bool = False, token_counts=None,
                   **overrides):
    """Return a quantized copy of ``model`` (a Seq2SeqTransformer) with TBT's placement.

    recipe: a preset name, "[method-]E-W-A", or a QuantRecipe. method: see METHODS.
    overrides: QuantRecipe fields (e.g. centre=False, a8_per_token=False).
    token_counts: (V,) token frequencies for a frequency-aware embedding (``embed_schedule``;
    minitbt.quant.freq_embedding.task_token_counts); without them its rows rank by id.
    The FP model is left untouched (it is the distillation teacher) unless ``inplace=True``.
    """
    r = _as_recipe(recipe, method, **overrides)
    if token_counts is not None and not r.embed_schedule:
        raise ValueError("token_counts rank the rows of a frequency-aware embedding: give embed_schedule too")
    qm = model if inplace else copy.deepcopy(model)
    for _, mod in list(qm.named_modules()):
        if isinstance(mod, MultiHeadAttention):
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                lin = getattr(mod, name)
                setattr(mod, name, _quant_linear(lin, r, signed=True, norm=r.subln and name == "out_proj"))
            ch = mod.d_head
            mod.q_quant, mod.k_quant, mod.v_quant = (r.act_quantizer(True, ch) for _ in range(3))
            mod.p_quant = r.act_quantizer(False, None, probabilities=True)
        elif isinstance(mod, FeedForward):
            mod.fc1 = _quant_linear(mod.fc1, r, signed=True)
            # input after the ReLU: non-negative; after a SubLN LayerNorm: signed
            mod.fc2 = _quant_linear(mod.fc2, r, signed=r.subln, norm=r.subln)
    emb = getattr(qm, "embed", None)
    if isinstance(emb, Embedding) and not isinstance(emb, QuantEmbedding):
        qm.embed = QuantEmbedding.from_embedding(emb, r.weight_quantizer(r.embed_bits, embedding=True,
                                                                         rows=emb.num_embeddings))
        if token_counts is not None:
            qm.embed.weight_quantizer.set_counts(token_counts)
    qm.quant_recipe = r
    return qm


def _quant_linear(lin: Linear, r: QuantRecipe, signed: bool, norm: bool = False) -> QuantLinear:
    if isinstance(lin, QuantLinear):
        raise ValueError("the model is already quantized")
    return QuantLinear.from_linear(lin, r.weight_quantizer(r.weight_bits, rows=lin.out_features),
                                   r.act_quantizer(signed, lin.in_features), input_norm=norm)


def quantizers(model):
    """(name, quantizer) for every quantizer in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Quantizer)]


def quantizer_parameters(model) -> list:
    """The Parameters that quantizers own (learned scales, BiT offsets), each once: what
    ``--clip-scales`` keeps out of the global gradient-norm clip."""
    seen, out = set(), []
    for _, q in quantizers(model):
        for p in q.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def describe(model, as_text: bool = False):
    """Which site of the model got which quantizer.

    Returns a list of dicts {site, quantizer, bits}: every weight matrix and quantized input,
    the attention hooks, and the full-precision sites (positions, LayerNorms, LM head) with bits 32.
    """
    rows = []

    def add(site, q):
        rows.append({"site": site, "quantizer": q.describe() if q is not None else "FP",
                     "bits": q.precision if q is not None else 32})

    for name, mod in model.named_modules():
        if isinstance(mod, QuantEmbedding):
            add(f"{name}.weight", mod.weight_quantizer)
        elif isinstance(mod, QuantLinear):
            add(f"{name}.weight", mod.weight_quantizer)
            add(f"{name}.input", mod.input_quantizer)
        elif isinstance(mod, MultiHeadAttention):
            for h in ("q", "k", "v", "p"):
                add(f"{name}.{h}_quant", getattr(mod, f"{h}_quant"))
        elif isinstance(mod, (Linear, Embedding)):
            add(f"{name}.weight", None)
        elif isinstance(mod, LayerNorm):
            add(name, None)
    if getattr(model, "lm_head", 1) is None and hasattr(model, "embed"):
        rows.append({"site": "output_projection (tied embed.weight, latent FP)", "quantizer": "FP", "bits": 32})
    if as_text:
        w = max(len(r["site"]) for r in rows)
        return "\n".join(f"{r['site']:<{w}}  {r['bits']:>2}  {r['quantizer']}" for r in rows)
    return rows


def attach_lat_curvature(model, optimizer) -> int:
    """Point every LATWeight at its weight's curvature sqrt(v_hat) in ``optimizer`` (an AdamW).
    Returns how many were attached."""
    n = 0
    for _, mod in model.named_modules():
        wq = getattr(mod, "weight_quantizer", None)
        if isinstance(wq, W.LATWeight):
            wq.curvature = (lambda p=mod.weight: optimizer.second_moment(p))
            n += 1
    return n
