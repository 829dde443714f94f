"""minitbt model <-> PyTorch module, weights, learned scales and quantizers included.

    to_torch(path_or_model)   a minitbt model (or a .npz checkpoint / .safetensors export) ->
                              minitbt.torch.Seq2SeqTransformer with the translated quantizers
    from_torch(module)        back: a minitbt Seq2SeqTransformer (quantized by its recipe) that packs

The two models share their parameter names, so the conversion is a copy of the state dict. The
quantizers are placed site by site where the minitbt model has them (``translate`` refuses, with
NotImplementedError, a class or option it has no translation for: nothing is dropped silently).
Learned scales keep their ``initialized`` flag, so a trained model never re-initialises them.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from minitbt.nn.transformer import Seq2SeqTransformer as MinitbtTransformer
from minitbt.nn.transformer import TransformerConfig
from minitbt.torch.model import MultiHeadAttention, QuantEmbedding, QuantLinear, Seq2SeqTransformer
from minitbt.torch.quant import Quantizer, translate

# where a quantizer may sit in the PyTorch model, by the class of its parent module
SITES = {QuantLinear: ("weight_quantizer", "input_quantizer"), QuantEmbedding: ("weight_quantizer",),
         MultiHeadAttention: MultiHeadAttention.QUANTIZER_SITES}


def load_minitbt(path: str):
    """(minitbt model, meta) from a checkpoint (.npz) or a safetensors export (.safetensors)."""
    if str(path).endswith(".safetensors"):
        from minitbt.safetensors_io import load_model_safetensors
        return load_model_safetensors(str(path))
    from minitbt.model_io import load_model
    return load_model(str(path))


def to_torch(path_or_model, dtype: torch.dtype = torch.float32, device=None) -> Seq2SeqTransformer:
    """The PyTorch module of a minitbt model: same architecture, weights, learned scales (and their
    ``initialized`` flags), and each quantizer translated (minitbt/torch/quant/).

    path_or_model: a minitbt Seq2SeqTransformer (float or fake-quantized), or the path of a
    checkpoint (.npz) or a safetensors export. ``dtype``: the module's float type (float64 for
    gradient checks). The module keeps the model's train/eval mode; a path gives eval mode."""
    model = load_minitbt(path_or_model)[0] if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    if getattr(model, "packed", False):
        raise ValueError("to_torch needs the quantization-aware model, not a packed one (packed layers hold "
                         "bits, not latent weights): convert the checkpoint it was packed from")
    if not isinstance(model, MinitbtTransformer):
        raise TypeError(f"to_torch converts a minitbt Seq2SeqTransformer, got {type(model).__name__}")
    from minitbt.quant import quantizers

    module = Seq2SeqTransformer(TransformerConfig.from_dict(model.config.to_dict()))
    for name, q in quantizers(model):
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        if attr not in SITES.get(type(parent), ()):
            raise NotImplementedError(f"{name}: minitbt.torch's model has no quantizer site there "
                                      f"({type(q).__name__} inside a {type(parent).__name__})")
        setattr(parent, attr, translate(q))
    from minitbt.quant.layers import QuantLinear as MinitbtQuantLinear
    for name, layer in model.named_modules():               # SubLN: the LayerNorm inside a QuantLinear
        if isinstance(layer, MinitbtQuantLinear) and layer.input_norm is not None:
            module.get_submodule(name).input_norm = torch.nn.LayerNorm(layer.in_features, eps=layer.input_norm.eps)
    module.quant_recipe = getattr(model, "quant_recipe", None)
    module.to(device=device, dtype=dtype)
    state = {name: torch.from_numpy(np.array(arr)) for name, arr in model.state_dict().items()}
    module.load_state_dict(state, strict=True)             # copy_ converts to the module's dtype
    module.train(model.training)
    return module


def _unwrap(module):
    """The Seq2SeqTransformer inside DistributedDataParallel / DataParallel, or the module itself."""
    inner = getattr(module, "module", None)
    return inner if not isinstance(module, Seq2SeqTransformer) and isinstance(inner, Seq2SeqTransformer) else module


def from_torch(module, dtype=None) -> MinitbtTransformer:
    """The minitbt model of a PyTorch module made by ``to_torch`` (or wrapped in DDP): rebuilt
    from its config and recipe, so it saves as a checkpoint and packs (``pack_model``).

    The recipe must place exactly the module's quantizers (as a checkpoint's header must): a site
    that differs is a ValueError. ``dtype``: float32 or float64 (default: the module's)."""
    from minitbt.quant import quantize_model, quantizers
    module = _unwrap(module)
    if not isinstance(module, Seq2SeqTransformer):
        raise TypeError(f"from_torch converts a minitbt.torch Seq2SeqTransformer, got {type(module).__name__}")
    model = MinitbtTransformer(TransformerConfig.from_dict(module.config.to_dict()))
    recipe = module.quant_recipe
    if recipe is not None:
        model = quantize_model(model, recipe, inplace=True)
    have = {name: q.describe() for name, q in module.named_modules() if isinstance(q, Quantizer)}
    want = {name: q.describe() for name, q in quantizers(model)}
    for site in sorted(set(have) | set(want)):
        if have.get(site) != want.get(site):
            raise ValueError(f"from_torch: {site} has {have.get(site, 'nothing')} but the recipe "
                             f"({recipe.name if recipe is not None else 'full precision'}) places "
                             f"{want.get(site, 'nothing')}; only a model its recipe rebuilds converts back")
    if dtype is None:
        dtype = np.float64 if any(p.dtype == torch.float64 for p in module.parameters()) else np.float32
    model.to_dtype(dtype)
    model.load_state_dict({name: t.detach().cpu().numpy() for name, t in module.state_dict().items()})
    model.train(module.training)
    return model
