"""Building models and moving them to and from checkpoint files.

A checkpoint's header says what to rebuild: the TransformerConfig and, for a quantization-aware
model, its recipe and method; then the saved arrays are loaded with full shape checks.
"""
from dataclasses import asdict

from minitbt import checkpoint
from minitbt.nn import Seq2SeqTransformer, TransformerConfig


def build_model(**config) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(TransformerConfig(**config))


def quantize(model, recipe, method: str = None):
    """A quantized copy of ``model`` (see minitbt.quant.quantize_model). ``recipe`` is a spec such
    as "2-2-8" or "twn-2-2-2", or the dict a checkpoint header holds (every QuantRecipe field)."""
    from minitbt.quant import QuantRecipe, quantize_model
    if isinstance(recipe, dict):
        recipe = QuantRecipe(**recipe)
    return quantize_model(model, recipe, method=method or None)


def model_meta(model) -> dict:
    """What a checkpoint header needs to rebuild ``model``: its config and quantization recipe."""
    recipe = getattr(model, "quant_recipe", None)
    return {"model_config": model.config.to_dict(), "quant": asdict(recipe) if recipe is not None else None}


def save_model(path: str, model, half: bool = False, **extra_meta) -> None:
    """Weights only (no optimizer), e.g. a shipped model in float16 with half=True."""
    checkpoint.save(path, model.state_dict(), {**model_meta(model), **extra_meta}, half=half)


def load_model(path: str, with_optimizer: bool = False):
    """Rebuild the model saved at ``path``: returns (model, meta) or (model, meta, optimizer_state)."""
    state, meta, optim_state = checkpoint.load(path)
    if "model_config" not in meta:
        raise checkpoint.CheckpointError(f"{path}: checkpoint header has no model_config")
    try:
        model = Seq2SeqTransformer(TransformerConfig.from_dict(meta["model_config"]))
    except (TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: bad model_config in checkpoint: {exc}") from None
    if meta.get("quant"):
        model = quantize(model, meta["quant"])
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{path} does not fit the model it describes:\n{exc}") from None
    model.eval()
    return (model, meta, optim_state) if with_optimizer else (model, meta)


def load_latent_fp(path: str) -> Seq2SeqTransformer:
    """The full-precision model behind any checkpoint: for a quantized one, its latent float
    weights (quantizer scales dropped), e.g. to start the next stage of multi-step distillation."""
    state, meta, _ = checkpoint.load(path)
    model = Seq2SeqTransformer(TransformerConfig.from_dict(meta["model_config"]))
    fp_names = set(model.state_dict())
    model.load_state_dict({k: v for k, v in state.items() if k in fp_names})
    return model
