"""PackedLinear and PackedEmbedding: weights as bit planes or integer codes, run on the bit kernels."""
import numpy as np

from minitbt import kernels
from minitbt.nn.module import Module, Parameter
from minitbt.quant.activation import MinMaxQuantizer
from minitbt.quant.base import PlaneCodes
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.tensor import Tensor
from minitbt.packed.levels import _codes_i8, _fake_quant, _levels, _per_token, _ternary_int8, _vec


class PackedLinear(Module):
    """y = q_x(x) W_q^T + b with W_q stored as bit planes. The kind, decided once here from the
    weight codes:

    * "ternary": codes in {-1, 0, 1}, two planes (2 bits per weight), a scale and offset per row;
      the bit kernels of ``_integer_dot`` / sign-add;
    * "bcq": binary-coding codes (PlaneCodes, W_r = sum_i a_{i,r} b_{i,r}), k sign planes (k bits
      per weight) and k scales per row; the LUT kernel ``kernels.gemm_bcq_lut`` on float32
      activations (float64, for exactness checks, runs the dequantized weight as a matmul);
    * "dense": anything else (8-bit codes, FP): a float matmul of the dequantized weight.
    """

    def __init__(self, qlinear: QuantLinear):
        super().__init__()
        self.in_features, self.out_features = qlinear.in_features, qlinear.out_features
        self.bias = Parameter(qlinear.bias.data, requires_grad=False) if qlinear.bias is not None else None
        self.input_quantizer = qlinear.input_quantizer
        N, K = qlinear.weight.data.shape
        wc = qlinear.weight_codes() if qlinear.weight_quantizer is not None else None
        if wc is not None and not isinstance(wc, PlaneCodes) and np.abs(wc.codes).max() <= 1:
            self.kind = "ternary"
            self.register_buffer("planes", kernels.pack_ternary(wc.codes.astype(np.int8)))   # (2, N, W)
            self.register_buffer("w_scale", _vec(wc.scale, N))
            self.register_buffer("w_offset", _vec(wc.offset, N))
        elif isinstance(wc, PlaneCodes) and not np.any(wc.offset):
            self.kind = "bcq"                                  # W_r = sum_i a_{i,r} b_{i,r}
            k = wc.codes.shape[0]
            self.register_buffer("bcq_signs", np.stack([kernels.pack_signs(b) for b in wc.codes]))  # (k, N, W)
            self.register_buffer("bcq_scale", np.asarray(wc.scale).reshape(k, N).copy())            # (k, N)
        else:                                                  # 8-bit codes, or FP
            self.kind = "dense"
            self.register_buffer("w_dense", qlinear.quantized_weight().astype(np.float32))
        self._layouts = {}

    @classmethod
    def _concat(cls, layers):
        """One PackedLinear computing the given ternary layers side by side (outputs concatenated);
        the input quantizer is the first layer's (the caller checks that they agree)."""
        first = layers[0]
        fused = cls.__new__(cls)
        Module.__init__(fused)
        fused.in_features = first.in_features
        fused.out_features = sum(m.out_features for m in layers)
        fused.bias = None if first.bias is None else \
            Parameter(np.concatenate([m.bias.data for m in layers]), requires_grad=False)
        fused.input_quantizer = first.input_quantizer
        fused.kind = "ternary"
        fused.planes = np.ascontiguousarray(np.concatenate([m.planes for m in layers], axis=1))
        fused.w_scale = np.concatenate([m.w_scale for m in layers])
        fused.w_offset = np.concatenate([m.w_offset for m in layers])
        fused._layouts = {}
        return fused

    # ---- weight layouts, prepared once per kernel on first use ----------------------
    def _codes(self) -> np.ndarray:
        K = self.in_features
        plus, minus = kernels.unpack_bits(self.planes[0], K), kernels.unpack_bits(self.planes[1], K)
        return plus.astype(np.int8) - minus.astype(np.int8)                # (N, K)

    def _layout(self, name):
        if name not in self._layouts:
            if "_codes" not in self._layouts:                              # first use (or after a load)
                codes = self._codes()
                self._layouts["codes_sum"] = codes.sum(axis=1).astype(self.w_scale.dtype)   # sum_k c_w
                self._layouts["binary"] = bool((codes != 0).all())
                self._layouts["_codes"] = codes
                self._layouts["w_offset_zero"] = not np.any(self.w_offset)
            codes = self._layouts["_codes"]
            make = {"int8": lambda: kernels.prepare_ternary_int8(codes),
                    "signadd": lambda: kernels.prepare_signadd(codes),
                    "signs": lambda: kernels.pack_signs(codes),
                    "ternary": lambda: np.ascontiguousarray(self.planes)}
            if name in make:
                self._layouts[name] = make[name]()
        return self._layouts[name]

    def _int8_plan(self):
        """Prepare the layouts; returns the input quantizer when apply2d's fast path applies
        (ternary weights without offsets, compiled kernels, a signed per-token min-max quantizer
        of 3 to 8 bits, i.e. the ternary x int8 kernel), else False."""
        q = self.input_quantizer
        ok = self.kind == "ternary" and kernels._core is not None and isinstance(q, MinMaxQuantizer) \
            and q.signed and q.per_token and 3 <= q.precision and q.qp <= 127
        if self.kind == "ternary":
            self._layout("codes_sum")
            ok = ok and self._layouts["w_offset_zero"]
            if ok:
                self._layout("int8")
        self._layouts["int8_quantizer"] = q if ok else False
        return self._layouts["int8_quantizer"]

    def reset_layouts(self):
        self._layouts = {}

    # ---- forward ------------------------------------------------------------------
    def forward(self, x):                                                   # (..., K) -> (..., N)
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        lead, K, N = xd.shape[:-1], self.in_features, self.out_features
        dtype = np.float64 if xd.dtype == np.float64 else np.float32        # float64 for exactness checks
        x2 = np.ascontiguousarray(xd.reshape(-1, K), dtype=dtype)          # (M, K)
        return Tensor(self.apply2d(x2).reshape(*lead, N))

    def apply2d(self, x2):
        """The layer on a C-contiguous (M, K) float32/float64 array -> (M, N), same dtype."""
        q8 = self._layouts.get("int8_quantizer")
        if q8 is None:
            q8 = self._int8_plan()
        if q8 and self.w_scale.dtype == x2.dtype:
            # the common case (8-bit per-token activations, no offsets): y = s_x s_w (c_x . c_w) + b
            ca = _codes_i8(q8, x2)                                   # compiled, float32
            if ca is None:
                r, sx, _ = _levels(q8, x2)
                ca = r.astype(np.int8), sx
            c8, sx = ca
            y = np.multiply(_ternary_int8(c8, self._layouts["int8"]), sx * self.w_scale, dtype=x2.dtype)
            if self.bias is not None:
                y += self.bias.data
            return y
        if self.kind == "dense":
            xq = x2 if self.input_quantizer is None else self.input_quantizer.codes(x2).dequantize()
            y = xq @ self.w_dense.T
        elif self.kind == "bcq":
            y = self._bcq_forward(x2)
        else:
            y = self._ternary_forward(x2)
        if self.bias is not None:
            b = self.bias.data
            if b.dtype == y.dtype:
                y += b                                                      # y is ours
            else:
                y = y + b
        return y.astype(x2.dtype, copy=False)

    def _ternary_forward(self, x2):
        M, K = x2.shape
        self._layout("codes_sum")
        q = self.input_quantizer
        if q is None:                                                       # float activations: sign-add
            dot = kernels.gemm_signadd_f32(x2.astype(np.float32), self._layout("signadd"))
            return dot * self.w_scale + (x2.sum(axis=1, keepdims=True) * self.w_offset)
        lv = _levels(q, x2)
        if lv is not None:                                                  # fast, exact (see _levels)
            r, sx, ox = lv
            c = r.astype(np.int8 if q.lo >= -128 and q.qp <= 127 else np.int16)
            sx = sx.reshape(-1, 1)
            if ox is None and self._layouts["w_offset_zero"]:               # the other terms are exact zeros
                return np.multiply(self._integer_dot(c), sx * self.w_scale, dtype=x2.dtype)
            ox = np.zeros((), x2.dtype) if ox is None else ox.reshape(-1, 1)
        else:
            qc = q.codes(x2)
            sx, ox = np.asarray(qc.scale, x2.dtype), np.asarray(qc.offset, x2.dtype)
            if not (_per_token(sx, M) and _per_token(ox, M)):               # per-channel scales: no kernel
                return qc.dequantize() @ (self._layout("_codes") * self.w_scale[:, None] + self.w_offset[:, None]).T
            c = np.ascontiguousarray(qc.codes)
            sx, ox = sx.reshape(-1, 1), ox.reshape(-1, 1)                   # (M or 1, 1)
        dot = self._integer_dot(c).astype(x2.dtype)                         # (M, N), exact integers
        csum = c.sum(axis=1, keepdims=True, dtype=np.int64).astype(x2.dtype)
        return (sx * self.w_scale) * dot + (sx * csum) * self.w_offset \
            + ox * (self.w_scale * self._layout("codes_sum")) + ox * self.w_offset * K

    # ---- binary-coding weights: k sign planes, table look-up --------------------------
    def _bcq_codes(self) -> np.ndarray:
        """The (k, N, K) sign codes in {-1, +1}, unpacked from bcq_signs (1 = -1)."""
        return 1 - 2 * kernels.unpack_bits(self.bcq_signs, self.in_features).astype(np.int8)

    def _bcq_forward(self, x2):
        """y = sum_i a_i (b_i . x_q), x_q = q_x(x) (the same values as the fake-quant forward):
        float32 by the LUT kernel; float64 (exactness checks) by the dequantized weight."""
        xq = _fake_quant(self.input_quantizer, x2)
        if xq.dtype == np.float32:
            lut = self._layouts.get("bcq_lut")
            if lut is None:
                lut = self._layouts["bcq_lut"] = kernels.prepare_bcq_lut(self._bcq_codes(), self.bcq_scale)
            return kernels.gemm_bcq_lut(np.ascontiguousarray(xq), lut)
        w = self._layouts.get("bcq_dense")
        if w is None:                                       # as PlaneCodes.dequantize
            w = self._layouts["bcq_dense"] = (self._bcq_codes() * self.bcq_scale[..., None]).sum(axis=0)
        return xq @ w.T.astype(xq.dtype, copy=False)

    def _integer_dot(self, c):
        """c_x (M, K) integer codes . c_w^T with the kernel their value sets allow."""
        K = self.in_features
        q = self.input_quantizer
        if getattr(q, "signed", False) and getattr(q, "precision", 0) >= 3 and c.dtype == np.int8:
            return self._int8_dot(c)                                        # 8-bit signed: ternary x int8
        lo, hi = int(c.min()), int(c.max())
        binary_w = self._layout("binary")
        if lo >= 0:                                                         # unsigned: bit planes
            k = max(1, hi.bit_length())
            planes = kernels.pack_bitplanes(c.astype(np.uint8), k)
            if binary_w:
                return kernels.gemm_bitplane_pm1(planes, self._layout("signs"), K)
            return kernels.gemm_bitplane(planes, self._layout("ternary"), K)
        if lo >= -1 and hi <= 1:
            if binary_w and not (c == 0).any():                             # W1A1: XNOR-popcount
                return kernels.gemm_xnor(kernels.pack_signs(c), self._layout("signs"), K)
            return kernels.gemm_ternary_ternary(kernels.pack_ternary(c.astype(np.int8)), self._layout("ternary"), K)
        if lo >= -128 and hi <= 127:                                        # 8-bit: ternary x int8
            return self._int8_dot(c.astype(np.int8))
        return c.astype(np.float32) @ self._layout("_codes").T.astype(np.float32)

    def _int8_dot(self, c8):
        return _ternary_int8(np.ascontiguousarray(c8), self._layout("int8"))

    def kernel_name(self) -> str:
        if self.kind == "dense":
            return "float matmul (no bit kernel for these codes)"
        if self.kind == "bcq":
            return "bcq-lut"
        q = self.input_quantizer
        if q is None:
            return "sign-add (float activations)"
        bits, signed = getattr(q, "precision", 32), getattr(q, "signed", True)
        if bits == 1 and signed:
            return "xnor-popcount" if self._layout("binary") else "ternary x ternary planes"
        if not signed:
            return f"bit planes ({bits}-bit unsigned)"
        return "ternary x ternary planes" if bits == 2 else "ternary x int8"

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, {self.kind}"


class PackedEmbedding(Module):
    """Quantized embedding rows as integer codes with a scale and offset per row.

    ``weight`` keeps the float table for the tied, full-precision LM head (as in training).
    """

    def __init__(self, qemb: QuantEmbedding):
        super().__init__()
        self.num_embeddings, self.dim = qemb.num_embeddings, qemb.dim
        self.weight = Parameter(qemb.weight.data, requires_grad=False)
        wc = qemb.weight_codes()
        V = self.num_embeddings
        if not isinstance(wc, PlaneCodes):
            self.register_buffer("codes", np.asarray(wc.codes, dtype=np.int8))
            self.register_buffer("row_scale", _vec(wc.scale, V))
            self.register_buffer("row_offset", _vec(wc.offset, V))
        else:                                  # binary-coding rows: kept dequantized, in the model's dtype
            dtype = np.float64 if wc.scale.dtype == np.float64 else np.float32
            self.register_buffer("codes", wc.dequantize().astype(dtype))
            self.register_buffer("row_scale", np.ones(V, dtype))
            self.register_buffer("row_offset", np.zeros(V, dtype))

    def forward(self, ids):                                                 # (...) -> (..., d)
        return Tensor(self.lookup(np.asarray(ids)))

    def lookup(self, ids):
        rows = self.codes[ids].astype(self.row_scale.dtype)
        return rows * self.row_scale[ids][..., None] + self.row_offset[ids][..., None]


# ---------------------------------------------------------------------------------------------
# The lean inference path: encode and cached decode on plain arrays
# ---------------------------------------------------------------------------------------------
