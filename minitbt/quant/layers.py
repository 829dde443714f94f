"""Quantized layers: a Linear and an Embedding that fake-quantize their weight (and input).

    QuantLinear:     y = q_x(x) q_W(W)^T + b       (bias full precision; both quantizers None = Linear)
                     y = q_x(LN(x)) q_W(W)^T + b   with ``input_norm`` (SubLN, recipe option ``subln``)
    QuantEmbedding:  y = q_W(W)[ids]                (per-row quantizer: one scale per word vector)

The latent full-precision weight stays the layer's ``.weight`` Parameter: the optimizer
updates it, the STE carries gradients to it, and anything tied to it (the output projection
of Seq2SeqTransformer uses ``embed.weight``) keeps seeing full-precision values.
"""
from __future__ import annotations

import numpy as np

from minitbt import functional as F
from minitbt.nn.layers import Embedding, LayerNorm, Linear
from minitbt.nn.module import Parameter
from minitbt.quant.base import QCodes
from minitbt.tensor import no_grad


class QuantLinear(Linear):
    """Linear layer with a weight quantizer and an input (activation) quantizer, each optional.

    ``input_norm`` (a LayerNorm over the input features, or None): BitDistill's SubLN (Wu et al.
    2025), normalising what the input quantizer sees, so that its scale meets a stable range;
    quantize_model adds it before out_proj and fc2 when the recipe says ``subln``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_quantizer=None,
                 input_quantizer=None, rng=None, input_norm: bool = False):
        super().__init__(in_features, out_features, bias, rng)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.input_norm = LayerNorm(in_features) if input_norm else None

    @classmethod
    def from_linear(cls, linear: Linear, weight_quantizer=None, input_quantizer=None,
                    input_norm: bool = False) -> "QuantLinear":
        """A QuantLinear with a copy of ``linear``'s weight and bias (and a fresh ``input_norm``)."""
        q = cls.__new__(cls)
        Linear.__init__(q, linear.in_features, linear.out_features, bias=linear.bias is not None, rng=0)
        q.weight = Parameter(linear.weight.data)
        q.bias = Parameter(linear.bias.data) if linear.bias is not None else None
        q.weight_quantizer, q.input_quantizer = weight_quantizer, input_quantizer
        q.input_norm = LayerNorm(linear.in_features) if input_norm else None
        q.train(linear.training)
        return q

    def forward(self, x):                                   # (..., in) -> (..., out)
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        return F.linear(x, w, self.bias)

    def quantized_weight(self) -> np.ndarray:
        """The fake-quantized weight the forward uses (the latent weight if unquantized)."""
        if self.weight_quantizer is None:
            return self.weight.data.copy()
        with no_grad():
            return self.weight_quantizer(self.weight).data

    def weight_codes(self) -> QCodes:
        return self.weight_quantizer.codes(self.weight.data)

    def extra_repr(self):
        s = super().extra_repr()
        wq = self.weight_quantizer.describe() if self.weight_quantizer is not None else "FP"
        xq = self.input_quantizer.describe() if self.input_quantizer is not None else "FP"
        return f"{s}, W: {wq}, X: {xq}"


class QuantEmbedding(Embedding):
    """Embedding lookup from a fake-quantized table (per row: each word vector has its own scale).

    A row-local quantizer (``weight_quantizer.row_local``) is applied to the looked-up rows only,
    which equals quantizing the whole table and then looking up, at a fraction of the cost; one with
    per-row settings (``row_indexed``: FrequencyAwareBCQ's bits per token) gets the rows and their ids.
    """

    def __init__(self, num_embeddings: int, dim: int, weight_quantizer=None, std: float = None, rng=None):
        super().__init__(num_embeddings, dim, std, rng)
        self.weight_quantizer = weight_quantizer

    @classmethod
    def from_embedding(cls, emb: Embedding, weight_quantizer=None) -> "QuantEmbedding":
        q = cls.__new__(cls)
        Embedding.__init__(q, emb.num_embeddings, emb.dim, rng=0)
        q.weight = Parameter(emb.weight.data)
        q.weight_quantizer = weight_quantizer
        q.train(emb.training)
        return q

    def forward(self, ids):                                 # (...) int -> (..., dim)
        wq = self.weight_quantizer
        if wq is None:
            return F.embedding(ids, self.weight)
        if getattr(wq, "row_indexed", False):
            return wq(F.embedding(ids, self.weight), rows=ids)
        if getattr(wq, "row_local", False):
            return wq(F.embedding(ids, self.weight))
        return F.embedding(ids, wq(self.weight))

    def quantized_weight(self) -> np.ndarray:
        if self.weight_quantizer is None:
            return self.weight.data.copy()
        with no_grad():
            return self.weight_quantizer(self.weight).data

    def weight_codes(self) -> QCodes:
        return self.weight_quantizer.codes(self.weight.data)

    def extra_repr(self):
        wq = self.weight_quantizer.describe() if self.weight_quantizer is not None else "FP"
        return f"{super().extra_repr()}, W: {wq}"
