"""Structured FFN pruning from activation maxima (Prato et al., "Fully Quantized Transformer for
Machine Translation", Findings of EMNLP 2020, FQT).

A hidden unit j of a ReLU feed-forward layer  y = fc2(relu(fc1(x)))  adds h_j(t) * fc2.W[:, j] to
token t's output. Run the model over some data and record, for every FFN layer l, the largest value
each unit takes after the ReLU (the "column maxima" of the post-ReLU activations):

    m_j = max_t h_j(t)             over every non-padding token t of the batches     (d_ff values per layer)

A unit whose maximum stays at or below the layer's threshold is removed: row j of fc1 (weight
(d_ff, d) and bias (d_ff,)) and column j of fc2's weight (d, d_ff). FQT's threshold, per layer:

    tau_l = k * std_j(m_j)          (k = ``threshold``; each layer's tau_l comes from its own maxima,
                                     so the pruning rate differs from layer to layer)
    keep unit j  <=>  m_j > tau_l

k = 0 removes exactly the dead units (m_j = 0: the ReLU output is 0 on every token seen), and the
outputs on that data do not change. FQT tracks the maxima with running estimates during training;
here they are the exact maxima over the batches given, after training (post-training pruning;
fine-tune afterwards if the threshold removed live units). At least one unit is kept per layer.

The pruned layers have different widths: ``TransformerConfig.ffn_widths`` records them (encoder
layers, then decoder layers), so a checkpoint rebuilds the pruned shapes.

Quantized models (QuantLinear keeps its quantizers) change in three places besides the removed units:

* fc1 loses rows: a per-row weight quantizer (TBT, binary coding, AbsMax, SEQ) quantizes every kept
  row exactly as before (SEQ's learned per-row scales are sliced with the rows); a per-tensor one
  (TWN, BWN, AbsMean, LAT on linear layers) recomputes its statistic over the kept rows.
* fc2 loses columns: every row's statistics (mean, mean|.|, max, the binary-coding fit) are
  recomputed over the kept columns, so the kept weights are quantized slightly differently.
* fc2's input quantizer sees fewer units per token: a per-token maximum (A8, min-max) is unchanged
  when the removed units are 0, a per-token minimum (``shift_min``) can move; FQT's per-channel
  learned scales are sliced with the units. LAT's curvature (an optimizer statistic) is dropped.

    >>> pruned, report = prune_ffn(model, batches, threshold=0.1)
    >>> print(report)

``python -m minitbt.quant.measure prune --model M.npz --task data/ddtp-en-de`` measures what a few
thresholds remove and what they cost in validation loss (docs/quantization.md, "FFN pruning").
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np

from minitbt.nn.module import Module, Parameter
from minitbt.nn.transformer import FeedForward
from minitbt.quant.activation import PerChannelQuantizer
from minitbt.quant.learned_weight import SEQWeight
from minitbt.quant.weight import LATWeight
from minitbt.tensor import Tensor, no_grad


@dataclass
class LayerPruning:
    """What pruning did to one FFN layer."""
    name: str              # e.g. "encoder.0.ffn"
    width: int             # units before pruning
    tau: float             # the layer's threshold k * std(m)
    keep: np.ndarray       # indices of the kept units (ascending)
    maxima: np.ndarray     # (width,) the post-ReLU maximum of every unit

    @property
    def kept(self) -> int:
        return len(self.keep)


@dataclass
class PruneReport:
    """Per-layer results of ``prune_ffn``; ``print(report)`` shows a table."""
    threshold: float
    n_tokens: int          # non-padding tokens (encoder + decoder) the maxima were taken over
    d_model: int
    layers: list

    @property
    def units(self) -> int:
        return sum(layer.width for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def params_removed(self) -> int:
        """fc1 row + fc1 bias + fc2 column per removed unit: 2 d + 1."""
        return (self.units - self.kept) * (2 * self.d_model + 1)

    def __str__(self):
        lines = [f"FFN pruning, k = {self.threshold:g} (tau = k * std of the layer's post-ReLU maxima), "
                 f"maxima over {self.n_tokens:,} tokens",
                 f"{'layer':<16}{'tau':>10}{'dead':>7}{'kept':>8}{'width':>8}{'removed':>9}"]
        for layer in self.layers:
            dead = int((layer.maxima <= 0).sum())
            lines.append(f"{layer.name:<16}{layer.tau:>10.4f}{dead:>7}{layer.kept:>8}{layer.width:>8}"
                         f"{100 * (1 - layer.kept / layer.width):>8.1f}%")
        lines.append(f"{'total':<16}{'':>10}{'':>7}{self.kept:>8}{self.units:>8}"
                     f"{100 * (1 - self.kept / max(self.units, 1)):>8.1f}%   "
                     f"({self.params_removed:,} parameters removed)")
        return "\n".join(lines)


class _MaxRecorder(Module):
    """Stands in for fc2 while measuring: keeps the running max over tokens of its input (the
    post-ReLU activations), then calls fc2. ``valid`` (B, T) marks the non-padding tokens."""

    def __init__(self, fc2, width: int):
        super().__init__()
        self.inner = fc2
        self.maxima = np.full(width, -np.inf)
        self.valid = None

    def forward(self, h):                                  # (B, T, d_ff) -> (B, T, d)
        hd = h.data if isinstance(h, Tensor) else np.asarray(h)
        rows = hd[self.valid] if self.valid is not None else hd.reshape(-1, hd.shape[-1])   # (N, d_ff)
        if rows.size:
            np.maximum(self.maxima, rows.max(axis=0), out=self.maxima)
        return self.inner(h)


def _ffns(model):
    """[(name, FeedForward, "encoder" | "decoder")] in the order of TransformerConfig.ffn_widths."""
    return [(f"{side}.{i}.ffn", layer.ffn, side) for side in ("encoder", "decoder")
            for i, layer in enumerate(getattr(model, side))]


def _as_pair(batch):
    """A Batch (minitbt.data) or a (src, tgt_in) pair -> (src, tgt_in) arrays."""
    if hasattr(batch, "src") and hasattr(batch, "tgt_in"):
        return np.asarray(batch.src), np.asarray(batch.tgt_in)
    src, tgt_in = batch[0], batch[1]
    return np.asarray(src), np.asarray(tgt_in)


def ffn_maxima(model, batches):
    """Run ``model`` (teacher-forced, eval mode, no graph) over ``batches`` and return
    ({"encoder.0.ffn": m (d_ff,), ...}, number of non-padding tokens seen by the encoder and decoder).
    m_j = max over the non-padding tokens of unit j's post-ReLU activation. A learned activation
    scale not initialised yet is initialised by the first batch, as in training."""
    if getattr(model, "packed", False):
        raise ValueError("prune_ffn works on a float or quantization-aware model: prune before pack_model")
    ffns = _ffns(model)
    for name, ffn, _ in ffns:
        if not isinstance(ffn, FeedForward) or ffn.activation != "relu":
            raise ValueError(f"prune_ffn needs ReLU feed-forward layers ({name} uses "
                             f"{getattr(ffn, 'activation', type(ffn).__name__)!r}): the rule reads "
                             f"post-ReLU maxima, and a unit of another activation is not off below them")
    recorders = []
    for name, ffn, side in ffns:
        rec = _MaxRecorder(ffn.fc2, ffn.fc1.out_features)
        ffn.fc2 = rec
        recorders.append((name, ffn, side, rec))
    was_training, pad, n_tokens = model.training, model.config.pad_id, 0
    model.eval()
    try:
        with no_grad():
            for batch in batches:
                src, tgt_in = _as_pair(batch)
                valid = {"encoder": src != pad, "decoder": tgt_in != pad}
                for _, _, side, rec in recorders:
                    rec.valid = valid[side]
                n_tokens += int(valid["encoder"].sum() + valid["decoder"].sum())
                model(src, tgt_in)
    finally:
        for _, ffn, _, rec in recorders:
            ffn.fc2 = rec.inner
        model.train(was_training)
    if n_tokens == 0:
        raise ValueError("prune_ffn: the batches hold no non-padding tokens")
    return {name: rec.maxima.copy() for name, _, _, rec in recorders}, n_tokens


def _prune_layer(ffn, keep: np.ndarray) -> None:
    """Keep units ``keep`` of one FFN in place: fc1 rows, fc1 bias, fc2 columns, and the quantizer
    state that is indexed by unit (SEQ per-row scales of fc1, FQT per-channel scales of fc2's input)."""
    fc1, fc2 = ffn.fc1, ffn.fc2
    n = len(keep)
    fc1.weight = Parameter(fc1.weight.data[keep])                     # (n, d)
    if fc1.bias is not None:
        fc1.bias = Parameter(fc1.bias.data[keep])                     # (n,)
    fc1.out_features = n
    fc2.weight = Parameter(fc2.weight.data[:, keep])                  # (d, n)
    fc2.in_features = n
    wq = getattr(fc1, "weight_quantizer", None)
    if isinstance(wq, SEQWeight):                                     # one learned scale per row of fc1
        wq.scale = Parameter(wq.scale.data[keep], requires_grad=wq.scale.requires_grad)
        wq.rows = n
    for q in (wq, getattr(fc2, "weight_quantizer", None)):
        if isinstance(q, LATWeight):                                  # curvature of the unpruned matrix
            q.set_curvature(None)
            q.curvature = None
    xq = getattr(fc2, "input_quantizer", None)
    if isinstance(xq, PerChannelQuantizer) and xq.channels:           # one learned scale per unit
        xq.scale = Parameter(xq.scale.data[keep], requires_grad=xq.scale.requires_grad)
        xq.channels = n


def prune_ffn(model, batches, threshold: float = 0.0):
    """FQT's structured FFN pruning: returns (a pruned copy of ``model``, PruneReport).

    model: a Seq2SeqTransformer with ReLU FFNs, full precision or quantization-aware (not packed).
    batches: an iterable of minitbt.data.Batch or (src (B, S), tgt_in (B, T)) pairs; the model runs
    teacher-forced over them to record each unit's post-ReLU maximum m_j (padding excluded).
    threshold: k >= 0; layer l keeps unit j iff m_j > k * std_j(m_j) (k = 0: remove the dead units).
    The copy's ``config.ffn_widths`` holds the new widths (None when nothing was removed)."""
    k = float(threshold)
    if not np.isfinite(k) or k < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    pruned = copy.deepcopy(model)          # measured on the copy: a quantizer that initialises its
    maxima, n_tokens = ffn_maxima(pruned, batches)  # scale on its first batch does so here, not in ``model``
    layers, widths = [], []
    for name, ffn, _ in _ffns(pruned):
        m = maxima[name]
        tau = k * float(np.std(m))
        keep = np.flatnonzero(m > tau)
        if keep.size == 0:                                            # keep the strongest unit
            keep = np.array([int(np.argmax(m))])
        layers.append(LayerPruning(name, len(m), tau, keep, m))
        _prune_layer(ffn, keep)
        widths.append(len(keep))
    cfg = pruned.config
    if all(w == cfg.d_ff for w in widths):
        widths = None
    pruned.config = replace(cfg, ffn_widths=widths)
    return pruned, PruneReport(k, n_tokens, cfg.d_model, layers)
