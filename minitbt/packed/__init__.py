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
per-row and per-token corrections applied outside the inner loop (docs/kernels.md section 1).

The kernel follows from the codes:  activations in {-1,+1} with binary weights: XNOR-popcount;
unsigned k-bit codes (ReLU outputs, attention-free FFN input): bit planes; signed ternary:
ternary x ternary planes; signed 8-bit: ternary x int8; float activations: sign-add.
Weights with more than three levels (8-bit) and per-channel activation scales have no
bit kernel here: they run as a float matmul of the dequantized values (said by ``kernel_report``).
Attention scores and P.V stay float matmuls of the quantized states, as in training.

Decoding speed (docs/kernels.md, "Decoding"). At batch 1 a step of a small model is a few
hundred tiny array operations, so what costs is Python and NumPy call overhead, not the
arithmetic. The packed model therefore runs ``encode`` and the cached ``decode`` on a lean
path (``lean_encode``/``lean_decode``): the same maths on plain arrays, without building
Tensors or walking modules, with

* the activation quantizers evaluated by ``_levels`` (the same equations as their ``codes``,
  a third of the NumPy calls; exact, including the tie snapping of ``round_ties``);
* one quantization and one kernel call for Q, K and V when their input quantizers are
  equal and stateless (8-bit min-max: the codes of one input are the same for all three);
* the attention states quantized once per token and kept quantized in the KV cache (the
  quantizers are per token, so this equals re-quantizing the whole cache every step);
* the kernel chosen from the quantizer's bit width (8-bit signed: ternary x int8, whose
  batch-1 path is the 2-bit GEMV) instead of scanning the codes' range at every call.

The forward without a cache (training-style evaluation) keeps the module path. The lean
functions also run an *unpacked* float model: benchmarks/bench_decode.py uses that to tell
what the kernels buy from what the leaner runtime buys.
"""
from minitbt.packed.export import kernel_report, load_packed, load_packed_or_pack, pack_model, save_packed
from minitbt.packed.layers import PackedEmbedding, PackedLinear
from minitbt.packed.runtime import PackedTransformer, lean_decode, lean_encode, lean_unsupported

__all__ = ["PackedEmbedding", "PackedLinear", "PackedTransformer", "kernel_report", "lean_decode", "lean_encode",
           "lean_unsupported", "load_packed", "load_packed_or_pack", "pack_model", "save_packed"]
