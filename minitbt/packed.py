"""The packed model: a quantization-aware-trained model exported to bits, run on the bit kernels.

``pack_model(qat_model)`` keeps the model's structure (attention, LayerNorms, residuals, the
full-precision LM head) and swaps every QuantLinear for a ``PackedLinear`` and the quantized
embedding for a ``PackedEmbedding``. A PackedLinear holds its weight as bit planes plus a
scale and a centre per output row; its latent float weight is gone. At run time it
quantizes its input with the *trained* activation quantizer (learned scales, offsets) and
computes the integer inner products with a kernel from ``minitbt.kernels``:

    x_q = s_x c_x + o_x  (per token),   W_q = s_w c_w + o_w  (per row)
    y = x_q W_q^T + b
      = s_x s_w (c_x . c_w) + s_x o_w sum(c_x) + o_x s_w sum(c_w) + o_x o_w K + b

Only ``c_x . c_w`` runs over K, in integers and without multiplications; the rest are
per-row and per-token corrections applied outside the inner loop (METHODS.md section 7).

The kernel follows from the codes:  activations in {-1,+1} with binary weights: XNOR-popcount;
unsigned k-bit codes (ReLU outputs, attention-free FFN input): bit planes; signed ternary:
ternary x ternary planes; signed 8-bit: ternary x int8; float activations: sign-add.
Weights with more than three levels (8-bit) and per-channel activation scales have no
bit kernel here: they run as a float matmul of the dequantized values (said by ``kernel_report``).
Attention scores and P.V stay float matmuls of the quantized states, as in training.
"""
import copy

import numpy as np

from minitbt import checkpoint, kernels
from minitbt.nn.module import Module, Parameter
from minitbt.quant.base import PlaneCodes
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.tensor import Tensor, no_grad


def _vec(a, n) -> np.ndarray:
    """A scale or offset (scalar, (n, 1) or (n,)) as a vector of length n (float32, or float64 if given)."""
    a = np.asarray(a)
    a = a.astype(np.float64 if a.dtype == np.float64 else np.float32)
    return np.broadcast_to(a.reshape(-1) if a.size > 1 else a.reshape(()), (n,)).copy()


class PackedLinear(Module):
    """y = q_x(x) W_q^T + b with W_q stored as ternary bit planes (2 bits per weight)."""

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
        else:                                                  # 8-bit or multi-plane codes, or FP
            self.kind = "dense"
            self.register_buffer("w_dense", qlinear.quantized_weight().astype(np.float32))
        self._layouts = {}

    # ---- weight layouts, prepared once per kernel on first use ----------------------
    def _codes(self) -> np.ndarray:
        K = self.in_features
        plus, minus = kernels.unpack_bits(self.planes[0], K), kernels.unpack_bits(self.planes[1], K)
        return plus.astype(np.int8) - minus.astype(np.int8)                # (N, K)

    def _layout(self, name):
        if name not in self._layouts:
            if not self._layouts:                                           # first use (or after a load)
                codes = self._codes()
                self._layouts["codes_sum"] = codes.sum(axis=1).astype(self.w_scale.dtype)   # sum_k c_w
                self._layouts["binary"] = bool((codes != 0).all())
                self._layouts["_codes"] = codes
            codes = self._layouts["_codes"]
            make = {"int8": lambda: kernels.prepare_ternary_int8(codes),
                    "signadd": lambda: kernels.prepare_signadd(codes),
                    "signs": lambda: kernels.pack_signs(codes),
                    "ternary": lambda: np.ascontiguousarray(self.planes)}
            if name in make:
                self._layouts[name] = make[name]()
        return self._layouts[name]

    def reset_layouts(self):
        self._layouts = {}

    # ---- forward ------------------------------------------------------------------
    def forward(self, x):                                                   # (..., K) -> (..., N)
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        lead, K, N = xd.shape[:-1], self.in_features, self.out_features
        dtype = np.float64 if xd.dtype == np.float64 else np.float32        # float64 for exactness checks
        x2 = np.ascontiguousarray(xd.reshape(-1, K), dtype=dtype)          # (M, K)
        if self.kind == "dense":
            xq = x2 if self.input_quantizer is None else self.input_quantizer.codes(x2).dequantize()
            y = xq @ self.w_dense.T
        else:
            y = self._ternary_forward(x2)
        if self.bias is not None:
            y = y + self.bias.data
        return Tensor(y.astype(dtype, copy=False).reshape(*lead, N))

    def _ternary_forward(self, x2):
        M, K = x2.shape
        self._layout("codes_sum")
        if self.input_quantizer is None:                                   # float activations: sign-add
            dot = kernels.gemm_signadd_f32(x2.astype(np.float32), self._layout("signadd"))
            return dot * self.w_scale + (x2.sum(axis=1, keepdims=True) * self.w_offset)
        qc = self.input_quantizer.codes(x2)
        sx, ox = np.asarray(qc.scale, x2.dtype), np.asarray(qc.offset, x2.dtype)
        if sx.size not in (1, M) or ox.size not in (1, M):                 # per-channel scales: no kernel
            return qc.dequantize() @ (self._layout("_codes") * self.w_scale[:, None] + self.w_offset[:, None]).T
        c = np.ascontiguousarray(qc.codes)
        dot = self._integer_dot(c).astype(x2.dtype)                         # (M, N), exact integers
        sx, ox = sx.reshape(-1, 1), ox.reshape(-1, 1)                       # (M or 1, 1)
        csum = c.sum(axis=1, keepdims=True, dtype=np.int64).astype(x2.dtype)
        return (sx * self.w_scale) * dot + (sx * csum) * self.w_offset \
            + ox * (self.w_scale * self._layout("codes_sum")) + ox * self.w_offset * K

    def _integer_dot(self, c):
        """c_x (M, K) integer codes . c_w^T with the kernel their value sets allow."""
        K = self.in_features
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
            return kernels.gemm_ternary_int8(c.astype(np.int8), self._layout("int8"))
        return c.astype(np.float32) @ self._layout("_codes").T.astype(np.float32)

    def kernel_name(self) -> str:
        if self.kind == "dense":
            return "float matmul (no bit kernel for these codes)"
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
        self.register_buffer("codes", np.asarray(wc.codes, dtype=np.int8) if not isinstance(wc, PlaneCodes)
                             else wc.dequantize().astype(np.float32))
        self.register_buffer("row_scale", _vec(wc.scale, V) if not isinstance(wc, PlaneCodes) else np.ones(V, np.float32))
        self.register_buffer("row_offset", _vec(wc.offset, V) if not isinstance(wc, PlaneCodes) else np.zeros(V, np.float32))

    def forward(self, ids):                                                 # (...) -> (..., d)
        ids = np.asarray(ids)
        rows = self.codes[ids].astype(self.row_scale.dtype)
        return Tensor(rows * self.row_scale[ids][..., None] + self.row_offset[ids][..., None])


def pack_model(model):
    """A packed copy of a quantization-aware model (the model itself is left as it is)."""
    if getattr(model, "quant_recipe", None) is None:
        raise ValueError("pack_model needs a quantized model (made by quantize_model / --quant)")
    packed = copy.deepcopy(model)
    packed.eval()
    with no_grad():
        for _, mod in list(packed.named_modules()):
            for name, child in list(mod.children()):
                if isinstance(child, QuantLinear):
                    setattr(mod, name, PackedLinear(child))
                elif isinstance(child, QuantEmbedding) and child.weight_quantizer is not None:
                    setattr(mod, name, PackedEmbedding(child))
    packed.packed = True
    return packed


def kernel_report(model) -> dict:
    """Which kernel each PackedLinear runs: {layer name: kernel}."""
    return {n: m.kernel_name() for n, m in model.named_modules() if isinstance(m, PackedLinear)}


def save_packed(path: str, model, tokenizer: str = None) -> None:
    """Write a packed model (bit planes, scales, FP parts) atomically, with its config and recipe."""
    if not getattr(model, "packed", False):
        raise ValueError("save_packed needs a model made by pack_model")
    from minitbt.model_io import model_meta
    meta = {**model_meta(model), "packed": True}
    if tokenizer:
        meta["tokenizer"] = tokenizer
    checkpoint.save(path, model.state_dict(), meta)


def load_packed(path: str):
    """Read a file written by save_packed: returns (packed model, meta)."""
    from minitbt.model_io import build_model, quantize
    state, meta, _ = checkpoint.load(path)
    if not meta.get("packed"):
        raise checkpoint.CheckpointError(f"{path} is not a packed model (export one with `minitbt export --packed`)")
    skeleton = quantize(build_model(**meta["model_config"]), meta["quant"])
    model = pack_model(skeleton)
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{path} does not fit the packed model it describes:\n{exc}") from None
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.reset_layouts()
    return model, meta


def load_packed_or_pack(path: str):
    """A packed model from ``path``: read it if it is a packed file, else pack the QAT checkpoint."""
    from minitbt.model_io import load_model
    _, meta, _ = checkpoint.load(path)
    if meta.get("packed"):
        return load_packed(path)
    model, meta = load_model(path)
    return pack_model(model), meta

