"""Packing a QAT model, reporting its kernels, saving and loading packed files."""
import copy

from minitbt import checkpoint
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.tensor import no_grad
from minitbt.packed.layers import PackedEmbedding, PackedLinear


def pack_model(model):
    """A packed copy of a quantization-aware model (the model itself is left as it is): the same
    module tree, with every QuantLinear replaced by a PackedLinear and the quantized embedding
    by a PackedEmbedding."""
    if getattr(model, "quant_recipe", None) is None:
        raise ValueError("pack_model needs a quantized model (made by quantize_model / --quant)")
    zeros = [n for n, q in model.named_modules() if getattr(q, "binary_zero", "plus") == "zero"
             and getattr(q, "signed", False) and getattr(q, "precision", 0) == 1]
    if zeros:
        raise ValueError(f"pack_model: {zeros[0]} (and {len(zeros) - 1} more) maps an exact 0 to the code 0 "
                         f"(binary_zero='zero'), which a 1-bit code cannot hold, so these activations would not "
                         f"run on the 1-bit kernels; train with binary_zero='plus' (the default) to pack")
    packed = copy.deepcopy(model)
    packed.eval()
    with no_grad():
        for _, mod in list(packed.named_modules()):
            for name, child in list(mod.children()):
                if isinstance(child, QuantLinear):
                    setattr(mod, name, PackedLinear.pack(child))
                elif isinstance(child, QuantEmbedding) and child.weight_quantizer is not None:
                    setattr(mod, name, PackedEmbedding.pack(child))
    packed.packed = True
    return packed


def kernel_report(model) -> dict:
    """Which kernel each PackedLinear runs: {layer name: kernel} (chosen at pack time)."""
    return {n: m.describe_kernel() for n, m in model.named_modules() if isinstance(m, PackedLinear)}


def packed_layers(model) -> dict:
    """The header's description of the packed layers: {name: {"kind": ..., "kernel": ...}}."""
    return {n: ({"kind": m.kind, "kernel": m.kernel} if isinstance(m, PackedLinear) else {"kind": "embedding"})
            for n, m in model.named_modules() if isinstance(m, (PackedLinear, PackedEmbedding))}


def save_packed(path: str, model, tokenizer: str = None) -> None:
    """Write a packed model (bit planes, scales, FP parts) atomically; its header holds the config,
    the recipe and each packed layer's weight kind and kernel, so the file loads in one step."""
    if not getattr(model, "packed", False):
        raise ValueError("save_packed needs a model made by pack_model")
    from minitbt.model_io import model_meta
    meta = {**model_meta(model), "packed": True, "packed_layers": packed_layers(model)}
    if tokenizer:
        meta["tokenizer"] = tokenizer
    checkpoint.save(path, model.state_dict(), meta)


def load_packed(path: str):
    """Read a file written by save_packed: returns (packed model, meta). The module tree and its
    quantizers come from the config and recipe; each packed layer is made from its arrays in the
    file, as the header describes it (nothing is packed again)."""
    from minitbt.model_io import build_model, check_size, quantize, validate_meta
    state, meta, _ = checkpoint.load(path)
    validate_meta(meta, path)
    if not meta.get("packed"):
        raise checkpoint.CheckpointError(f"{path} is not a packed model (export one with `minitbt export --packed`)")
    if not meta.get("quant") or "packed_layers" not in meta:
        raise checkpoint.CheckpointError(f"{path}: a packed model's header needs its quant recipe and its packed "
                                         f"layers (export it again with `minitbt export --packed`)")
    check_size(meta["model_config"], state, path)
    model = quantize(build_model(**meta["model_config"]), meta["quant"]).eval()
    modules = dict(model.named_modules())
    try:
        for name, desc in meta["packed_layers"].items():
            parent, _, attr = name.rpartition(".")
            old = modules[name]
            arrays = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            if desc["kind"] == "embedding":
                new = PackedEmbedding(arrays["weight"], arrays["codes"], arrays["row_scale"], arrays["row_offset"])
            else:
                new = PackedLinear(old.in_features, old.out_features, desc["kind"], arrays, arrays.get("bias"),
                                   old.input_quantizer, old.input_norm)
                if new.kernel != desc["kernel"]:
                    raise ValueError(f"{name}: the header says kernel {desc['kernel']!r}, its codes give {new.kernel!r}")
            setattr(modules[parent] if parent else model, attr, new)
        model.packed = True
        model.load_state_dict(state)                    # the quantizers' scales, norms, positions, ...
    except (KeyError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path} does not fit the packed model it describes:\n{exc}") from None
    return model, meta


def load_packed_or_pack(path: str):
    """A packed model from ``path``: read it if it is a packed file, else pack the QAT checkpoint."""
    from minitbt.model_io import load_model
    _, meta, _ = checkpoint.load(path)
    if meta.get("packed"):
        return load_packed(path)
    model, meta = load_model(path)
    return pack_model(model), meta
