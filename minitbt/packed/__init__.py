"""The packed model: a quantization-aware-trained model exported to bits, run on the bit kernels.

``pack_model(qat_model)`` keeps the model's module tree (attention, LayerNorms, residuals, the
full-precision LM head: the one forward of ``minitbt.nn``) and swaps every QuantLinear for a
``PackedLinear`` and the quantized embedding for a ``PackedEmbedding``. A PackedLinear holds its
weight as bit planes plus a scale and a centre per output row; its latent float weight is gone.
At run time it quantizes its input with the *trained* activation quantizer's ``codes()``
(learned scales, offsets) and computes the integer inner products on the kernel chosen for it
at pack time from the kernel table (``minitbt.packed.table``):

    x_q = s_x c_x + o_x  (per token),   W_q = s_w c_w + o_w  (per row)
    y = x_q W_q^T + b
      = s_x s_w (c_x . c_w) + s_x o_w sum(c_x) + o_x s_w sum(c_w) + o_x o_w K + b

Only ``c_x . c_w`` runs over K, in integers and without multiplications; the rest are
per-row and per-token corrections applied outside the inner loop (docs/kernels.md section 1).
Attention scores and P.V stay float matmuls of the quantized states, as in training.

``save_packed`` writes the bits with a header that names each packed layer's weight kind and
kernel; ``load_packed`` makes the packed layers from the file's arrays directly.
"""
from minitbt.packed.export import (kernel_report, load_packed, load_packed_or_pack, pack_model, packed_layers,
                                   save_packed)
from minitbt.packed.layers import PackedEmbedding, PackedLinear
from minitbt.packed.table import KERNELS, choose_kernel

__all__ = ["KERNELS", "PackedEmbedding", "PackedLinear", "choose_kernel", "kernel_report", "load_packed",
           "load_packed_or_pack", "pack_model", "packed_layers", "save_packed"]
