"""The training configuration: every option of ``minitbt train`` as one dataclass, and the presets.

    cfg = config_from_preset("tiny", task="data/ddtp-en-de", out="runs/tiny")   # a preset, some overrides
    cfg.validate()                   # a ValueError naming the option, before any work

A flag of the command line is a field here (``--batch-tokens`` is ``batch_tokens``); a checkpoint keeps
the whole config, so ``--resume`` continues with the same settings (minitbt/run_checks.py).
"""
import math
from dataclasses import dataclass, fields, replace


@dataclass
class TrainConfig:
    task: str = "data/ddtp-en-de"
    out: str = "runs/tiny"
    # model (used when training from scratch)
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    n_layers: int = 2            # encoder and decoder layers each
    dropout: float = 0.1
    max_src_len: int = 64
    max_tgt_len: int = 64
    copy: int = 0                # 1: a pointer-generator output that can copy source tokens (See et al. 2017)
    # optimisation
    batch_tokens: int = 3000
    accumulate: int = 1          # micro-batches per optimizer step: the gradient of one batch N times larger
    lr: float = 2e-3
    warmup: int = 100
    decay: str = "linear"
    max_steps: int = 600
    max_minutes: float = 0.0     # stop (and checkpoint) after this much training time; 0 = no limit
    weight_decay: float = 0.01
    clip: float = 1.0            # global gradient-norm clip (0 = none)
    clip_scales: str = "separate"  # quantizer scales: their own clip at --clip, apart from the others
                                 # (the pilot's winner); "global": in the global clip; "none": never clipped
    label_smoothing: float = 0.1
    # bookkeeping
    eval_every: int = 200
    eval_sentences: int = 200    # greedy-decoded validation sentences for the metric, spread over the split
    log_every: int = 10
    seed: int = 0
    init: str = ""               # start from this checkpoint's weights (a quantized student from its FP model)
    # quantization-aware training (see minitbt.quant and minitbt.distill)
    quant: str = ""              # "E-W-A" recipe, e.g. "2-2-8"; empty = full precision
    method: str = ""             # quantization method (tbt, twn, bwn, bit, ...); "" = from --quant, else tbt
    quant_options: str = ""      # QuantRecipe overrides "name=value,...", e.g. "lsq_grad_scale=1,binary_zero=zero"
    teacher: str = ""            # FP checkpoint to distil from
    kd_logits: float = 1.0
    kd_hidden: float = 0.0       # TBT's loss has 1.0 for both MSE terms; the pilot found the logits alone
    kd_attn: float = 0.0         # better and faster (docs/quantization.md, "What the pilot chose")
    kd_temperature: float = 1.0  # T of the logit distillation: softmax(z/T) targets, loss times T^2

    def validate(self) -> "TrainConfig":
        """Refuse, before any work, a setting that cannot train: a ValueError naming the option."""
        def need(ok, name, rule):
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} {rule}, got {getattr(self, name)!r}")
        for name in ("d_model", "n_heads", "d_ff", "n_layers", "max_src_len", "max_tgt_len",
                     "batch_tokens", "accumulate", "max_steps", "eval_every", "log_every"):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        need(self.warmup >= 0, "warmup", "must be >= 0")
        need(self.eval_sentences >= 0, "eval_sentences", "must be >= 0")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "must be a positive number")
        for name in ("weight_decay", "clip", "max_minutes", "kd_logits", "kd_hidden", "kd_attn"):
            need(math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, name, "must be a number >= 0")
        need(math.isfinite(self.kd_temperature) and self.kd_temperature > 0, "kd_temperature",
             "must be a positive number")
        need(self.clip_scales in ("global", "separate", "none"), "clip_scales", "must be global, separate or none")
        need(not self.quant_options or bool(self.quant), "quant_options", "needs --quant")
        need(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.copy in (0, 1), "copy", "must be 0 or 1")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        need(self.decay in ("linear", "cosine", "constant"), "decay", "must be linear, cosine or constant")
        need(self.d_model % self.n_heads == 0, "d_model", f"must be divisible by --n-heads {self.n_heads}")
        need(bool(self.task), "task", "must name a task folder")
        need(bool(self.out), "out", "must name an output folder")
        if self.quant:
            self.recipe()                                         # an unknown recipe or option fails here
        return self

    def recipe(self):
        """The QuantRecipe of --quant, --method and --quant-options (None without --quant)."""
        if not self.quant:
            return None
        from minitbt.quant import QuantRecipe
        try:
            options = QuantRecipe.parse_options(self.quant_options)
            return QuantRecipe.parse(self.quant, self.method or None, **options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--quant {self.quant}" + (f" --quant-options {self.quant_options}"
                                                        if self.quant_options else "") + f": {exc}") from None


PRESETS = {
    # a few minutes on a laptop CPU; BLEU worth showing on ddtp-en-de within 10 minutes
    "tiny": dict(d_model=128, n_layers=2, d_ff=512, max_src_len=64, max_tgt_len=64, lr=2e-3,
                 warmup=100, max_steps=1400, eval_every=350),
    # the shipped full-precision models (the calibration architecture of docs/benchmark-rules.md)
    "small": dict(d_model=128, n_layers=3, d_ff=512, max_src_len=96, max_tgt_len=96, lr=1.5e-3,
                  warmup=300, max_steps=4000, eval_every=500),
    # a test-sized run (seconds)
    "test": dict(d_model=32, n_heads=2, n_layers=1, d_ff=64, max_src_len=24, max_tgt_len=24, lr=3e-3,
                 warmup=5, max_steps=20, eval_every=10, eval_sentences=8, batch_tokens=400, log_every=5),
}


def config_from_preset(preset: str = "tiny", **overrides) -> TrainConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown training options: {sorted(bad)}")
    return replace(TrainConfig(**PRESETS[preset]), **overrides)
