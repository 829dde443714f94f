"""minitbt.torch: the same model and quantizers in PyTorch, for users who outgrow minitbt.

    pip install -e ".[torch]"

    from minitbt.torch import to_torch, from_torch
    module = to_torch("models/ddtp-en-de-2-2-8.npz")      # torch.nn.Module, same architecture and names
    logits = module(src_ids, tgt_ids)                      # (B, T, V), as minitbt's model(src, tgt)
    loss.backward()                                        # the same pseudo-gradients (STEs), scales included
    model = from_torch(module)                             # a minitbt model again: save_model, pack_model

    model.py       Seq2SeqTransformer, MultiHeadAttention, QuantLinear, QuantEmbedding: minitbt/nn and
                   minitbt/quant/layers.py in PyTorch; greedy(module, src) decodes with minitbt's loop
    quant/         the quantizers of minitbt.quant as torch.autograd.Functions (TBT, BiT, TWN, BWN,
                   BitNet, A8 / min-max), each a translation of the minitbt class of the same name:
                   base.py, weight.py, activation.py, as in minitbt/quant/
    convert.py     to_torch, from_torch, load_minitbt (.npz checkpoints and .safetensors exports)

docs/pytorch.md walks through it; examples/ddp_qat.py fine-tunes a converted model with
DistributedDataParallel and exports it back for packing.
"""
try:
    import torch  # noqa: F401
except ImportError as exc:                                  # pragma: no cover - depends on the install
    raise ImportError("minitbt.torch needs PyTorch: pip install -e \".[torch]\" (or pip install torch)") from exc

from minitbt.torch.convert import from_torch, load_minitbt, to_torch
from minitbt.torch.model import (MultiHeadAttention, QuantEmbedding, QuantLinear, Seq2SeqTransformer,
                                 greedy)
from minitbt.torch.quant import TRANSLATIONS, Quantizer, translate

__all__ = ["to_torch", "from_torch", "load_minitbt", "Seq2SeqTransformer", "MultiHeadAttention", "QuantLinear",
           "QuantEmbedding", "greedy", "Quantizer", "TRANSLATIONS", "translate"]
