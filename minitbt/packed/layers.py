"""PackedLinear and PackedEmbedding: weights as bit planes or integer codes, run on the bit kernels."""
import numpy as np

from minitbt import kernels
from minitbt.nn.module import Module, Parameter
from minitbt.quant.base import PlaneCodes
from minitbt.tensor import Tensor
from minitbt.packed.table import FLOAT, choose_kernel, plane_bits


def _vec(a, n) -> np.ndarray:
    """A scale or offset (scalar, (n, 1) or (n,)) as a vector of length n (float32, or float64 if given)."""
    a = np.asarray(a)
    a = a.astype(np.float64 if a.dtype == np.float64 else np.float32)
    return np.broadcast_to(a.reshape(-1) if a.size > 1 else a.reshape(()), (n,)).copy()


WEIGHT_ARRAYS = {"ternary": ("planes", "w_scale", "w_offset"), "binary": ("planes", "w_scale", "w_offset"),
                 "bcq": ("bcq_signs", "bcq_scale"), "dense": ("w_dense",)}


class PackedLinear(Module):
    """y = q_x(x) W_q^T + b, W_q stored packed. The weight kind:

    * "ternary" / "binary": codes in {-1, 0, 1} (binary: no 0), two bit planes (2, N, W), a scale
      ``w_scale`` and an offset ``w_offset`` per row;
    * "bcq": binary-coding codes (PlaneCodes, W_r = sum_i a_{i,r} b_{i,r}): k sign planes
      ``bcq_signs`` (k, N, W) and k scales per row ``bcq_scale`` (k, N);
    * "dense": anything else (8-bit codes, FP): the dequantized weight ``w_dense`` (N, K).

    ``kernel`` is chosen here, once, from the kernel table (minitbt/packed/table.py). The input
    is quantized by the trained activation quantizer's ``codes()``; then

        y = s_x s_w (c_x . c_w) + s_x o_w sum(c_x) + o_x s_w sum(c_w) + o_x o_w K + b

    with only c_x . c_w on the kernel (docs/kernels.md section 1).
    """

    def __init__(self, in_features, out_features, kind, weights: dict, bias=None, input_quantizer=None,
                 input_norm=None):
        super().__init__()
        self.in_features, self.out_features, self.kind = in_features, out_features, kind
        self.bias = None if bias is None else Parameter(np.asarray(bias), requires_grad=False)
        self.input_quantizer = input_quantizer
        self.input_norm = input_norm                      # SubLN's LayerNorm (QuantLinear.input_norm) or None
        for name in WEIGHT_ARRAYS[kind]:
            self.register_buffer(name, np.asarray(weights[name]))
        self.kernel = choose_kernel(input_quantizer, kind)
        self._prepare()

    @classmethod
    def pack(cls, qlinear):
        """The packed form of a QuantLinear (its latent float weight is not kept)."""
        N = qlinear.out_features
        wc = qlinear.weight_codes() if qlinear.weight_quantizer is not None else None
        if wc is not None and not isinstance(wc, PlaneCodes) and np.abs(wc.codes).max() <= 1:
            codes = wc.codes.astype(np.int8)
            kind = "binary" if (codes != 0).all() else "ternary"
            weights = {"planes": kernels.pack_ternary(codes), "w_scale": _vec(wc.scale, N),
                       "w_offset": _vec(wc.offset, N)}
        elif isinstance(wc, PlaneCodes) and not np.any(wc.offset):
            kind, k = "bcq", wc.codes.shape[0]
            weights = {"bcq_signs": np.stack([kernels.pack_signs(b) for b in wc.codes]),
                       "bcq_scale": np.asarray(wc.scale).reshape(k, N).copy()}
        else:
            kind, weights = "dense", {"w_dense": qlinear.quantized_weight().astype(np.float32)}
        bias = None if qlinear.bias is None else qlinear.bias.data
        return cls(qlinear.in_features, N, kind, weights, bias, qlinear.input_quantizer, qlinear.input_norm)

    # ---- the weight layout the kernel reads, prepared once ------------------------------
    def _prepare(self):
        K, k = self.in_features, self.kernel
        if self.kind == "bcq":
            signs = 1 - 2 * kernels.unpack_bits(self.bcq_signs, K).astype(np.int8)          # (k, N, K)
            self._lut = kernels.prepare_bcq_lut(signs, self.bcq_scale)
            self._w = (signs * self.bcq_scale[..., None]).sum(axis=0)      # as PlaneCodes.dequantize
            return
        if self.kind == "dense":
            self._w = self.w_dense
            return
        codes = kernels.unpack_bits(self.planes[0], K).astype(np.int8) - kernels.unpack_bits(self.planes[1], K)
        self._codes_sum = codes.sum(axis=1).astype(self.w_scale.dtype)     # sum_k c_w
        self._w_offset = bool(np.any(self.w_offset))
        if k == FLOAT:
            self._w = codes * self.w_scale[:, None] + self.w_offset[:, None]
        elif k == "ternary x int8":
            self._int8 = kernels.prepare_ternary_int8(codes)
        elif k == "sign-add (float activations)":
            self._signadd = kernels.prepare_signadd(codes)
        elif k in ("xnor-popcount", "bit planes x signs"):
            self._signs = kernels.pack_signs(codes)
        if k.startswith("bit planes"):
            self._planes_k = plane_bits(self.input_quantizer)

    # ---- forward ------------------------------------------------------------------
    def forward(self, x):                                                   # (..., K) -> (..., N)
        if self.input_norm is not None:                                     # SubLN
            x = self.input_norm(x if isinstance(x, Tensor) else Tensor(np.asarray(x)))
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        lead, K, N = xd.shape[:-1], self.in_features, self.out_features
        dtype = np.float64 if xd.dtype == np.float64 else np.float32        # float64 for exactness checks
        x2 = np.ascontiguousarray(xd.reshape(-1, K), dtype=dtype)          # (M, K)
        y = self._matmul(x2)
        if self.bias is not None:
            y += self.bias.data.astype(y.dtype, copy=False)
        return Tensor(y.astype(dtype, copy=False).reshape(*lead, N))

    def _matmul(self, x2):                                                 # (M, K) -> (M, N), a new array
        q, k = self.input_quantizer, self.kernel
        if k in (FLOAT, "bcq-lut"):
            xq = x2 if q is None else q.codes(x2).dequantize()              # == q(x), the fake-quantized input
            if k == "bcq-lut" and xq.dtype == np.float32:
                return kernels.gemm_bcq_lut(np.ascontiguousarray(xq), self._lut)
            return xq @ self._w.T.astype(xq.dtype, copy=False)             # float64: no LUT kernel
        if k == "sign-add (float activations)":
            dot = kernels.gemm_signadd_f32(x2.astype(np.float32), self._signadd)
            return dot * self.w_scale + x2.sum(axis=1, keepdims=True) * self.w_offset
        c, sx, ox = q.codes(x2)                                             # (M, K), scale and offset per token
        dot = self._integer_dot(c)                                          # (M, N) int32, exact
        if not self._w_offset and ox.size == 1 and not ox.any():            # the usual case: y = s_x s_w (c_x . c_w)
            return np.multiply(dot, sx * self.w_scale, dtype=x2.dtype)
        csum = c.sum(axis=1, keepdims=True, dtype=np.int64).astype(x2.dtype)
        return (sx * self.w_scale) * dot + (sx * csum) * self.w_offset \
            + ox * (self.w_scale * self._codes_sum) + ox * self.w_offset * self.in_features

    def _integer_dot(self, c):
        """c_x (M, K) integer codes . c_w^T on this layer's kernel -> (M, N) int32."""
        K, k = self.in_features, self.kernel
        if k == "ternary x int8":
            return kernels.gemm_ternary_int8(np.ascontiguousarray(c, dtype=np.int8), self._int8)
        if k == "xnor-popcount":
            return kernels.gemm_xnor(kernels.pack_signs(c), self._signs, K)
        if k == "ternary x ternary planes":
            return kernels.gemm_ternary_ternary(kernels.pack_ternary(c.astype(np.int8)), self.planes, K)
        planes = kernels.pack_bitplanes(c.astype(np.uint8), self._planes_k)
        if k == "bit planes x signs":
            return kernels.gemm_bitplane_pm1(planes, self._signs, K)
        return kernels.gemm_bitplane(planes, self.planes, K)

    def describe_kernel(self) -> str:
        """The kernel, with the number of bit planes where it has them (kernel_report)."""
        if self.kernel.startswith("bit planes"):
            return f"{self.kernel} ({self._planes_k}-bit unsigned)"
        return self.kernel

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, {self.kind}, {self.describe_kernel()}"


class PackedEmbedding(Module):
    """Quantized embedding rows as integer codes with a scale and offset per row.

    ``weight`` keeps the float table for the tied, full-precision LM head (as in training).
    Binary-coding rows are kept dequantized in ``codes`` (scale 1, offset 0).
    """

    def __init__(self, weight, codes, row_scale, row_offset):
        super().__init__()
        self.num_embeddings, self.dim = np.shape(weight)
        self.weight = Parameter(np.asarray(weight), requires_grad=False)
        self.register_buffer("codes", np.asarray(codes))
        self.register_buffer("row_scale", np.asarray(row_scale))
        self.register_buffer("row_offset", np.asarray(row_offset))

    @classmethod
    def pack(cls, qemb):
        wc, V = qemb.weight_codes(), qemb.num_embeddings
        if not isinstance(wc, PlaneCodes):
            return cls(qemb.weight.data, np.asarray(wc.codes, dtype=np.int8), _vec(wc.scale, V), _vec(wc.offset, V))
        dtype = np.float64 if wc.scale.dtype == np.float64 else np.float32
        return cls(qemb.weight.data, wc.dequantize().astype(dtype), np.ones(V, dtype), np.zeros(V, dtype))

    def forward(self, ids):                                                 # (...) -> (..., d)
        ids = np.asarray(ids)
        rows = self.codes[ids].astype(self.row_scale.dtype)
        return Tensor(rows * self.row_scale[ids][..., None] + self.row_offset[ids][..., None])
