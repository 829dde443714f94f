"""Packing a QAT model, reporting its kernels, saving and loading packed files."""
import copy


from minitbt import checkpoint
from minitbt.nn.transformer import Seq2SeqTransformer
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.tensor import no_grad
from minitbt.packed.layers import PackedEmbedding, PackedLinear
from minitbt.packed.runtime import PackedTransformer




# ---------------------------------------------------------------------------------------------
# Packing, reports, files
# ---------------------------------------------------------------------------------------------

def pack_model(model):
    """A packed copy of a quantization-aware model (the model itself is left as it is)."""
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
                    setattr(mod, name, PackedLinear(child))
                elif isinstance(child, QuantEmbedding) and child.weight_quantizer is not None:
                    setattr(mod, name, PackedEmbedding(child))
    if type(packed) is Seq2SeqTransformer:
        packed.__class__ = PackedTransformer
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
    from minitbt.model_io import build_model, check_size, quantize, validate_meta
    state, meta, _ = checkpoint.load(path)
    validate_meta(meta, path)
    if not meta.get("packed"):
        raise checkpoint.CheckpointError(f"{path} is not a packed model (export one with `minitbt export --packed`)")
    if not meta.get("quant"):
        raise checkpoint.CheckpointError(f"{path}: a packed model's header needs its quant recipe")
    check_size(meta["model_config"], state, path)
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
