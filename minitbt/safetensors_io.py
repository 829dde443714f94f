"""A model's weights and learned scales in the safetensors format (``minitbt export --format safetensors``).

A safetensors file is a JSON header (tensor names, dtypes, shapes, and a string-to-string
``__metadata__``) followed by the raw little-endian tensor bytes: no code runs when it is read,
and PyTorch, NumPy, JAX and the Hugging Face tools read it directly.

    tensors    the model's state dict under minitbt's names, which are also minitbt.torch's:
               latent float weights, biases, LayerNorms, positions, the learned activation scales and
               BiT offsets (``...input_quantizer.scale``), and each learned scale's ``initialized`` flag (bool)
    metadata   format "minitbt", version "1", and as JSON text: model_config (TransformerConfig),
               quant (the QuantRecipe, or null), task and train_config when known;
               tokenizer: the tokenizer.json text itself

    >>> save_safetensors("model.safetensors", model, tokenizer=tok.to_str())
    >>> state, meta = read_safetensors("model.safetensors")        # NumPy arrays, the header as a dict
    >>> model, meta = load_model_safetensors("model.safetensors")  # the minitbt model again

The file holds what training needs (latent weights, scales), not the packed bits: to run on the
bit kernels, load it and ``pack_model``. Needs the ``safetensors`` package (a minitbt dependency).
"""
import json
import os

import numpy as np

from minitbt.checkpoint import CheckpointError, atomic_write

FORMAT = "minitbt"
VERSION = "1"
RAW_TEXT = ("tokenizer",)        # stored as they are (a tokenizer.json is JSON text already)
KEPT = ("model_config", "quant", "tokenizer", "task", "train_config")   # what a header keeps


def save_safetensors(path: str, model, half: bool = False, **extra_meta) -> None:
    """Write ``model``'s state dict and its header (config, recipe, and ``extra_meta`` such as
    tokenizer=, task=, train_config=) to ``path``, atomically. ``half``: float32 -> float16, every
    quantized weight's code kept (``model_io.half_state``). Non-finite weights are refused, as for a
    checkpoint."""
    from safetensors.numpy import save
    from minitbt.model_io import half_state, model_meta
    if getattr(model, "packed", False):
        raise ValueError("a packed model has no latent weights to write as safetensors: export the "
                         "quantization-aware model (it packs again after loading)")
    meta = {**model_meta(model), **{k: v for k, v in extra_meta.items() if v is not None}}
    unknown = sorted(set(meta) - set(KEPT))
    if unknown:
        raise ValueError(f"save_safetensors: unknown header field(s) {unknown}; known: {list(KEPT)}")
    tensors = {}
    for name, arr in (half_state(model)[0] if half else model.state_dict()).items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise CheckpointError(f"not saving {path}: weight {name!r} holds non-finite values (NaN or inf)")
        tensors[name] = arr
    metadata = {"format": FORMAT, "version": VERSION}
    for key, value in meta.items():
        metadata[key] = value if key in RAW_TEXT else json.dumps(value)
    blob = save(tensors, metadata=metadata)

    atomic_write(path, lambda f: f.write(blob))


def read_safetensors(path: str):
    """(state, meta) of a file written by ``save_safetensors``: NumPy arrays (float16 back to
    float32) and the header as a dict, checked against the checkpoint schema. A file that is not a
    minitbt safetensors file is a CheckpointError."""
    from safetensors import SafetensorError, safe_open
    from minitbt.model_io import validate_meta
    if not os.path.exists(path):
        raise FileNotFoundError(f"model not found: {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            raw = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not one minitbt wrote (metadata format "
                              f"{raw.get('format')!r}, expected {FORMAT!r})")
    meta = {}
    for key, text in raw.items():
        if key in ("format", "version"):
            continue
        try:
            meta[key] = text if key in RAW_TEXT else json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: metadata {key!r} is not JSON: {exc}") from None
    validate_meta(meta, path)
    for name, arr in state.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise CheckpointError(f"{path}: weight {name!r} holds non-finite values (NaN or inf)")
        if arr.dtype == np.float16:
            state[name] = arr.astype(np.float32)
    return state, meta


def load_model_safetensors(path: str):
    """Rebuild the minitbt model saved at ``path``: returns (model, meta), in eval mode."""
    from minitbt.model_io import build_model, check_size, quantize
    state, meta = read_safetensors(path)
    check_size(meta["model_config"], state, path)
    model = build_model(**meta["model_config"])
    if meta.get("quant"):
        model = quantize(model, meta["quant"])
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{path} does not fit the model it describes:\n{exc}") from None
    model.eval()
    return model, meta
