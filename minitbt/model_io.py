"""Building models and moving them to and from checkpoint files.

A checkpoint's header says what to rebuild: the TransformerConfig and, for a quantization-aware
model, its recipe and method; then the saved arrays are loaded with full shape checks.
The header is checked against a schema first (``validate_meta``): every field of the configs
by name and type, the recipe's families, the tokenizer, the task. A header that fails any of
these is a CheckpointError naming the field, never a crash later.
"""
from dataclasses import asdict, fields

import numpy as np

from minitbt import checkpoint
from minitbt.config import TrainConfig
from minitbt.nn import Seq2SeqTransformer, TransformerConfig

CheckpointError = checkpoint.CheckpointError


def build_model(**config) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(TransformerConfig(**config))


def quantize(model, recipe, method: str = None, token_counts=None):
    """A quantized copy of ``model`` (see minitbt.quant.quantize_model). ``recipe`` is a spec such
    as "2-2-8" or "twn-2-2-2", or the dict a checkpoint header holds (every QuantRecipe field).
    ``token_counts`` ranks the rows of a frequency-aware embedding (quant/freq_embedding.py)."""
    from minitbt.quant import QuantRecipe, quantize_model
    if isinstance(recipe, dict):
        recipe = QuantRecipe(**recipe)
    return quantize_model(model, recipe, method=method or None, token_counts=token_counts)


def _quantizer_sites(model) -> dict:
    """{site: class and settings} of every quantizer in ``model``, as ``describe`` lists them."""
    from minitbt.quant import describe
    return {r["site"]: r["quantizer"] for r in describe(model)}


def model_meta(model) -> dict:
    """What a checkpoint header needs to rebuild ``model``: its config and quantization recipe.

    A header holds the recipe as plain fields, so a model can be saved only if its recipe
    rebuilds exactly its quantizers. One with a quantizer set by hand (a class of the user's
    own, or other options) is refused here rather than coming back different after loading."""
    recipe = getattr(model, "quant_recipe", None)
    rebuilt = Seq2SeqTransformer(TransformerConfig.from_dict(model.config.to_dict()))
    if recipe is not None:
        rebuilt = quantize(rebuilt, recipe)
    if getattr(model, "packed", False):                   # compare like with like
        from minitbt.packed import pack_model
        rebuilt = pack_model(rebuilt)
    have, want = _quantizer_sites(model), _quantizer_sites(rebuilt)
    for site in sorted(set(have) | set(want)):
        if have.get(site) != want.get(site):
            raise ValueError(f"cannot save this model: {site} has {have.get(site, 'nothing')} but its recipe "
                             f"({recipe.name if recipe is not None else 'full precision'}) rebuilds "
                             f"{want.get(site, 'nothing')}; a checkpoint stores only the recipe, so the model "
                             f"would come back different")
    return {"model_config": model.config.to_dict(), "quant": asdict(recipe) if recipe is not None else None}


# ---- the header's schema ------------------------------------------------------------------------
_NULLABLE = {"a8_clip"}          # QuantRecipe.a8_clip = None means "no clipping"
_INT_LISTS = {"ffn_widths"}      # TransformerConfig.ffn_widths: null (d_ff everywhere) or a list of integers


def _typed(value, default) -> bool:
    """Does a JSON value have the type of a dataclass field's default?"""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def config_from_header(cls, d, what: str, where: str):
    """Build dataclass ``cls`` from a header's dict ``d``: unknown fields, wrong types and values
    its constructor refuses are each a CheckpointError naming the field."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: {what} must be a JSON object, got {type(d).__name__}")
    defaults = cls()
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise CheckpointError(f"{where}: unknown {what} field(s) {unknown}")
    for key, value in d.items():
        default = getattr(defaults, key)
        if key in _INT_LISTS:
            ok = value is None or (isinstance(value, list) and all(_typed(v, 0) for v in value))
            if not ok:
                raise CheckpointError(f"{where}: {what}.{key} must be a list of integers or null, got {value!r}")
        elif not (_typed(value, default) or (value is None and key in _NULLABLE)):
            raise CheckpointError(f"{where}: {what}.{key} must be {type(default).__name__}, got {value!r}")
    try:
        return cls(**d)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: bad {what}: {exc}") from None


def validate_meta(meta: dict, where: str) -> dict:
    """Check a checkpoint header against its schema; returns it unchanged or raises CheckpointError."""
    from minitbt.quant import QuantRecipe
    if "model_config" not in meta:
        raise CheckpointError(f"{where}: checkpoint header has no model_config")
    config_from_header(TransformerConfig, meta["model_config"], "model_config", where)
    if meta.get("quant") is not None:
        config_from_header(QuantRecipe, meta["quant"], "quant", where)
    if "train_config" in meta:
        cfg = config_from_header(TrainConfig, meta["train_config"], "train_config", where)
        try:
            cfg.validate()
        except ValueError as exc:
            raise CheckpointError(f"{where}: bad train_config: {exc}") from None
    if "task" in meta:
        task = meta["task"]
        if not (isinstance(task, dict) and isinstance(task.get("name"), str)
                and task.get("kind") in ("translation", "summarization")):
            raise CheckpointError(f"{where}: task must be {{'name': str, 'kind': 'translation' | "
                                  f"'summarization'}}, got {task!r}")
    if "train_state" in meta and not isinstance(meta["train_state"], dict):
        raise CheckpointError(f"{where}: train_state must be a JSON object")
    if not isinstance(meta.get("packed", False), bool):
        raise CheckpointError(f"{where}: packed must be true or false")
    if meta.get("tokenizer") is not None:
        tokenizer_from_header(meta, where)
    return meta


def check_size(model_config: dict, state: dict, where: str) -> None:
    """Refuse a header that describes a model far larger than the arrays in the file, before
    building it (a corrupt d_model or vocab_size must not allocate gigabytes first). The count
    is the float weight matrices' (biases, LayerNorms and scales add little)."""
    c = TransformerConfig.from_dict(model_config)
    d, (enc_ff, dec_ff) = c.d_model, c.layer_ffn_widths()           # FFN widths: d_ff, or pruned per layer
    implied = (c.vocab_size + c.max_len) * d + c.n_encoder_layers * 4 * d * d + c.n_decoder_layers * 8 * d * d \
        + 2 * d * (sum(enc_ff) + sum(dec_ff))
    stored = sum(int(a.size) * (64 if a.dtype == np.uint64 else 1) for a in state.values())  # packed: 64 a word
    if implied > 2 * stored + 4096:
        raise CheckpointError(f"{where}: model_config describes about {implied:,} weights but the file "
                              f"holds {stored:,}: the header does not belong to these arrays")


def tokenizer_from_header(meta: dict, where: str):
    """The BPE tokenizer a checkpoint carries, or None; a garbage one is a CheckpointError."""
    from tokenizers import Tokenizer
    from minitbt.data import check_specials
    text = meta.get("tokenizer")
    if text is None:
        return None
    if not isinstance(text, str):
        raise CheckpointError(f"{where}: tokenizer must be a JSON string (a tokenizer.json), got {type(text).__name__}")
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:           # the tokenizers library raises its own Exception subclasses
        raise CheckpointError(f"{where}: the tokenizer in the header is not a valid tokenizer.json "
                              f"({str(exc).splitlines()[0][:120]})") from None
    try:
        check_specials(tok, where)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return tok


def save_model(path: str, model, half: bool = False, **extra_meta) -> None:
    """Weights only (no optimizer), e.g. a shipped model in float16 with half=True (``half_state``:
    every quantized weight keeps its code)."""
    state = half_state(model)[0] if half else model.state_dict()
    checkpoint.save(path, state, {**model_meta(model), **extra_meta}, half=half)


def half_state(model, max_steps: int = 64):
    """``model``'s state rounded to float16, with every quantized weight's integer code kept.

    Rounding a latent weight w to float16 moves it by up to 2^-11 |w|; a weight that close to a
    threshold of its quantizer (a ternary rounding edge, the sign's 0) changes its code, and the
    shipped file would hold another model than the one trained (the 2-2-8 translation row: 2,631 of
    4.6 M codes). Each such weight is moved back one float16 step at a time, towards the side its
    float32 code is on, until the codes computed from the rounded model (its float16 statistics
    and learned scales) equal the float32 model's. Codes grow with w for every element-wise weight
    quantizer, so the direction is known; multi-plane codes (binary coding) are only rounded.
    The scales are recomputed from rounded weights: they differ from float32's in the last bits.

    Returns (state, moved, changed): ``moved`` counts the codes that rounding changed, ``changed``
    those that still differ (0 unless a weight could not be moved back within ``max_steps`` float16
    steps). ``model`` is left as it was.
    """
    state32 = model.state_dict()
    layers = [m for m in model.modules() if getattr(m, "weight_quantizer", None) is not None]
    before = [m.weight_codes().codes for m in layers]               # (out, in) ints, float32 weights
    model.load_state_dict({k: v.astype(np.float16).astype(v.dtype) if v.dtype == np.float32 else v
                           for k, v in state32.items()})
    moved = changed = 0
    try:
        for m, want in zip(layers, before):
            w = m.weight.data                                       # float32 holding float16 values
            have = m.weight_codes().codes
            moved += int((have != want).sum())
            for _ in range(max_steps):
                off = have != want
                if have.shape != w.shape or not off.any():          # bit planes: no single direction
                    break
                up = np.where(want[off] > have[off], np.inf, -np.inf).astype(np.float16)
                w[off] = np.nextafter(w[off].astype(np.float16), up).astype(w.dtype)
                have = m.weight_codes().codes
            changed += int((have != want).sum())
        state = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in model.state_dict().items()}
    finally:
        model.load_state_dict(state32)
    return state, moved, changed


def load_model(path: str, with_optimizer: bool = False):
    """Rebuild the model saved at ``path``: returns (model, meta) or (model, meta, optimizer_state)."""
    state, meta, optim_state = checkpoint.load(path)
    validate_meta(meta, path)
    if meta.get("packed"):
        raise CheckpointError(f"{path} is a packed model: load it with minitbt.packed.load_packed "
                              f"(the CLI: --packed)")
    check_size(meta["model_config"], state, path)
    model = Seq2SeqTransformer(TransformerConfig.from_dict(meta["model_config"]))
    if meta.get("quant"):
        model = quantize(model, meta["quant"])
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{path} does not fit the model it describes:\n{exc}") from None
    model.eval()
    return (model, meta, optim_state) if with_optimizer else (model, meta)


def with_copy_gate(model, seed: int = 0):
    """The same float model with a pointer-generator output added (``copy=True``): every weight kept,
    the new gate initialised as ``build_model`` would (seeded). For transfer: a translation model
    starts a summarizer that copies."""
    from dataclasses import replace
    if model.copy_gate is not None:
        return model
    new = Seq2SeqTransformer(replace(model.config, copy=True, seed=seed))
    gate = {k: v for k, v in new.state_dict().items() if k.startswith("copy_gate.")}
    new.load_state_dict({**model.state_dict(), **gate})
    return new


def load_latent_fp(path: str, with_meta: bool = False):
    """The full-precision model behind any checkpoint: for a quantized one, its latent float
    weights (quantizer scales dropped), e.g. to start the next stage of multi-step distillation."""
    state, meta, _ = checkpoint.load(path)
    validate_meta(meta, path)
    check_size(meta["model_config"], state, path)
    model = Seq2SeqTransformer(TransformerConfig.from_dict(meta["model_config"]))
    fp_names = set(model.state_dict())
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in fp_names})
    except ValueError as exc:
        raise CheckpointError(f"{path} does not fit the model it describes:\n{exc}") from None
    return (model, meta) if with_meta else model
