"""Where the time of one training step goes: full precision against quantization-aware + distillation.

    python benchmarks/profile_qat_step.py                          # FP, 2-2-8, 2-2-2, 1-1-1; 1 thread
    python benchmarks/profile_qat_step.py --steps 3 --json docs/runs/profile_qat_step.json
    python benchmarks/profile_qat_step.py --recipes 2-2-2,1-1-1 --kernel-paths portable,avx2   # the quantizer kernel
    python benchmarks/profile_qat_step.py --malloc default     # without minitbt/malloc.py's settings

The `small` preset with the architecture of --model (models/ddtp-en-de-fp.npz: d_model 192, 3+3 layers,
d_ff 768, 8k vocabulary), initialised from it; it is also the frozen teacher of the quantized recipes. One step is what
train.py runs: loss (CE; for a quantized student CE + soft CE + hidden MSE + attention MSE from the
teacher) + backward + global-norm clip + AdamW, on real 3,000-token batches of data/ddtp-en-de.

Two measurements per recipe, in this process, on the CPU-time clock (process_time, one thread):
1. step time: `--warmup` untimed steps, then `--steps` timed steps; the median, and the median of each
   phase (teacher forward, student forward + loss, backward, clip + AdamW) timed around it.
2. a breakdown by op: `--profile-steps` steps under cProfile (self time of every function; a backward
   closure is charged to the op that defines it), grouped into the categories of the table. The
   teacher's forward runs outside the profiler (its time is the phase figure), so the op shares are
   those of the student's forward and backward, the loss terms and the optimizer.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_args  # noqa: E402  (imports no NumPy)


def _flags(p):
    p.set_defaults(repeats=3, warmup=1)
    p.add_argument("--steps", type=int, default=None, help="timed steps per recipe (default: --repeats)")
    p.add_argument("--profile-steps", type=int, default=2, help="steps per recipe under cProfile")
    p.add_argument("--recipes", default="fp,2-2-8,2-2-2,1-1-1", help="comma-separated; fp = full precision")
    p.add_argument("--model", default="models/ddtp-en-de-fp.npz", help="teacher and initial weights")
    p.add_argument("--task", default="data/ddtp-en-de")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="keep: reuse freed memory as training does (minitbt/malloc.py); default: the C "
                        "library's own settings (benchmarks/bench_malloc.py compares the two)")
    p.add_argument("--kernel-paths", default="",
                   help="e.g. portable,avx2: every recipe once per kernel path, stepping in turns on the same "
                        "batches (the learned-scale quantizers run NumPy on portable, one compiled pass on avx2)")


ARGS, UNSET = bench_args(__doc__, _flags)

import ast  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minitbt import distill, optim  # noqa: E402
from minitbt.kernels import use_path  # noqa: E402
from minitbt.malloc import keep_freed_memory  # noqa: E402
from minitbt.data import Seq2SeqData, load_tokenizer  # noqa: E402
from minitbt.model_io import load_model  # noqa: E402
from minitbt.train import _initial_model, accumulate_gradients, config_from_preset  # noqa: E402

PKG = os.path.dirname(os.path.abspath(distill.__file__))

# category of a function: (file suffix under minitbt/, enclosing function name or "*") -> category
OPS = [
    ("quant/", "*", "quantizers"),
    ("functional/nn.py", "soft_cross_entropy", "soft CE (distillation)"),
    ("functional/nn.py", "mse_loss", "hidden + attention MSE (distillation)"),
    ("functional/nn.py", "cross_entropy", "CE"),
    ("distill.py", "*", "distillation glue"),
    ("functional/arith.py", "linear", "linear"),
    ("functional/arith.py", "matmul", "attention"),
    ("functional/nn.py", "scaled_dot_product_attention", "attention"),
    ("functional/nn.py", "softmax", "attention"),
    ("functional/arith.py", "masked_fill", "attention"),
    ("nn/attention.py", "*", "attention"),
    ("functional/nn.py", "layer_norm", "layernorm"),
    ("optim.py", "*", "optimizer (clip + AdamW)"),
    ("tensor.py", "backward", "autograd walk"),
]
ORDER = ["quantizers fwd", "quantizers bwd", "soft CE (distillation)", "hidden + attention MSE (distillation)",
         "distillation glue", "CE", "linear fwd", "linear bwd", "attention fwd", "attention bwd",
         "layernorm fwd", "layernorm bwd", "optimizer (clip + AdamW)", "autograd walk", "other fwd", "other bwd"]

_OWNERS = {}
# the sources as imported (line numbers of the loaded code, even if a file is edited while this runs)
_SOURCES = {os.path.join(d, f): open(os.path.join(d, f), encoding="utf-8").read()
            for d, _, files in os.walk(PKG) for f in files if f.endswith(".py")}


def _owner(path: str, line: int) -> str:
    """The name of the outermost function (or class method) of ``path`` that contains ``line``."""
    if path not in _OWNERS:
        spans = []
        try:
            tree = ast.parse(_SOURCES[path])
        except (KeyError, SyntaxError):
            tree = None
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                spans.append((node.lineno, node.end_lineno, node.name))
        _OWNERS[path] = spans
    best = None
    for lo, hi, name in _OWNERS[path]:
        if lo <= line <= hi and (best is None or lo < best[0]):
            best = (lo, hi, name)
    return best[2] if best else "?"


def _category(path: str, line: int, name: str):
    """The category of a minitbt function, None for any other (NumPy, builtins)."""
    path = os.path.normpath(path)
    if not path.startswith(PKG + os.sep):
        return None
    rel = os.path.relpath(path, PKG)
    owner = _owner(path, line)
    closure = name in ("backward", "<lambda>") and owner != name
    for suffix, fn, c in OPS:
        if (rel.endswith(suffix) or rel.startswith(suffix)) and fn in ("*", owner):
            if c in ("quantizers", "linear", "attention", "layernorm"):
                c += " bwd" if closure else " fwd"
            return c
    return "other bwd" if closure else "other fwd"


def categorize(stats: pstats.Stats) -> dict:
    """Self time by category. A function outside minitbt (a NumPy ufunc, a builtin) is charged to
    the minitbt functions that called it, in proportion to the time each call site spent in it;
    a backward closure counts as the backward of the op that defines it."""
    table = stats.stats
    memo = {}

    def shares(key, depth=0):                      # {category: fraction of key's self time}
        if key in memo:
            return memo[key]
        cat = _category(*key)
        if cat is not None:
            memo[key] = {cat: 1.0}
            return memo[key]
        memo[key] = {"other fwd": 1.0}             # provisional (recursion through cycles)
        callers = table[key][4] if key in table else {}
        total = sum(v[2] for v in callers.values())
        out = {}
        if depth < 50 and total > 0:
            for ck, v in callers.items():
                for c, f in shares(ck, depth + 1).items():
                    out[c] = out.get(c, 0.0) + f * v[2] / total
        memo[key] = out or {"other fwd": 1.0}
        return memo[key]

    out = {}
    for key, (_, _, tottime, _, _) in table.items():
        for c, f in shares(key).items():
            out[c] = out.get(c, 0.0) + f * tottime
    return out


def setup(recipe: str, tokenizer, teacher_path: str):
    quant = "" if recipe == "fp" else recipe
    cfg = config_from_preset("small", task=ARGS.task, init=teacher_path, quant=quant,
                             teacher=teacher_path if quant else "", batch_tokens=3000)
    cfg.validate()
    model = _initial_model(cfg, tokenizer).train()
    teacher = None
    if quant:
        teacher, _ = load_model(teacher_path)
        teacher.eval()
    opt = optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scales = ()
    if quant:
        from minitbt.quant import attach_lat_curvature
        attach_lat_curvature(model, opt)
    return cfg, model, teacher, opt, scales


class Phases:
    """Times teacher_targets and the backward pass inside one step (process_time)."""

    def __init__(self):
        self.t = {}
        self.profiler = None
        self._tt = distill.teacher_targets

    def __enter__(self):
        phases = self

        def timed_teacher(*a, **k):
            if phases.profiler is not None:
                phases.profiler.disable()
            t0 = time.process_time()
            try:
                return phases._tt(*a, **k)
            finally:
                phases.t["teacher forward"] = phases.t.get("teacher forward", 0.0) + time.process_time() - t0
                if phases.profiler is not None:
                    phases.profiler.enable()
        distill.teacher_targets = timed_teacher
        return self

    def __exit__(self, *exc):
        distill.teacher_targets = self._tt


def make_step(cfg, model, teacher, opt, scales, phases: Phases):
    from minitbt.tensor import Tensor
    real_backward = Tensor.backward

    def step(batch):
        phases.t = {}
        t0 = time.process_time()
        opt.zero_grad()
        tb = {}

        def timed_backward(self, *a, **k):
            s = time.process_time()
            try:
                return real_backward(self, *a, **k)
            finally:
                tb["backward"] = tb.get("backward", 0.0) + time.process_time() - s
        Tensor.backward = timed_backward
        try:
            loss = accumulate_gradients(model, [batch], cfg, teacher)
        finally:
            Tensor.backward = real_backward
        t1 = time.process_time()
        optim.clip_grad_norm(opt.params, cfg.clip, apart=scales)
        opt.step()
        t2 = time.process_time()
        teacher_t = phases.t.get("teacher forward", 0.0)
        return loss, {"total": t2 - t0, "teacher forward": teacher_t,
                      "student forward + loss": (t1 - t0) - teacher_t - tb.get("backward", 0.0),
                      "backward": tb.get("backward", 0.0), "clip + AdamW": t2 - t1}
    return step


def main():
    from _common import header, print_table, write_json

    if ARGS.malloc == "keep":
        keep_freed_memory()
    info = header(ARGS, UNSET, extra="small preset, "
                  f"init and teacher {ARGS.model}; 3,000-token batches of {ARGS.task}; malloc: {ARGS.malloc}")
    n_steps = ARGS.steps or ARGS.repeats
    tokenizer = load_tokenizer(ARGS.task)
    cfg0 = config_from_preset("small", task=ARGS.task)
    data = Seq2SeqData.from_task(ARGS.task, "train", tokenizer, cfg0.max_src_len, cfg0.max_tgt_len)
    order = data.batches(3000, seed=0)
    need = ARGS.warmup + n_steps + ARGS.profile_steps
    batches = [data.collate(order[i % len(order)]) for i in range(need)]
    print(f"# {ARGS.warmup} warm-up + {n_steps} timed + {ARGS.profile_steps} profiled steps per recipe; "
          f"tokens per batch: {[b.n_tokens for b in batches]}")

    # --kernel-paths: each recipe once per kernel path, the sides stepping in turns on the same batches
    paths = ARGS.kernel_paths.split(",") if ARGS.kernel_paths else [None]
    results = {}
    for recipe in ARGS.recipes.split(","):
        sides = []
        for path in paths:
            cfg, model, teacher, opt, scales = setup(recipe, tokenizer, ARGS.model)
            phases = Phases()
            sides.append({"name": recipe if path is None else f"{recipe}@{path}", "path": path, "phases": phases,
                          "step": make_step(cfg, model, teacher, opt, scales, phases), "losses": [], "samples": []})
        for i in range(need):
            for side in sides:
                with (use_path(side["path"]) if side["path"] else contextlib.nullcontext()), side["phases"]:
                    profiling = i >= ARGS.warmup + n_steps
                    if profiling:
                        prof = side.setdefault("prof", cProfile.Profile())
                        side["phases"].profiler = prof
                        prof.enable()
                    loss, t = side["step"](batches[i])
                    if profiling:
                        prof.disable()
                        side["phases"].profiler = None
                if not profiling:
                    side["losses"].append(loss)
                    if i >= ARGS.warmup:
                        side["samples"].append({k: v / batches[i].n_tokens * 3000 for k, v in t.items()})
        for side in sides:
            samples, losses = side["samples"], side["losses"]
            cats = categorize(pstats.Stats(side["prof"])) if "prof" in side else {}
            total = sum(cats.values()) or 1.0
            med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            results[side["name"]] = {"median_s": med, "samples_s": samples, "losses": losses,
                                     "op_share": {k: v / total for k, v in cats.items()}}
            print(f"{side['name']:>6}: step {1e3 * med['total']:.0f} ms (median of {n_steps}, per 3,000 tokens); "
                  f"first losses {', '.join(f'{x:.6f}' for x in losses[:3])}")

    fp = next((v["median_s"]["total"] for r, v in results.items() if r.split("@")[0] == "fp"), None)
    print("\n# step time per 3,000 target tokens, CPU ms (median); phases timed around the step")
    cols = ["total", "teacher forward", "student forward + loss", "backward", "clip + AdamW"]
    rows = [{"recipe": r, **{c: 1e3 * v["median_s"][c] for c in cols},
             "ratio": v["median_s"]["total"] / fp if fp else None} for r, v in results.items()]
    print_table(rows, [("recipe", "recipe", "{}")] + [(c, c, "{:.0f}") for c in cols] +
                [("ratio", "/ FP", "{:.2f}")])
    print("\n# self-time shares (cProfile) of the student's step (teacher forward excluded), %")
    cats = [c for c in ORDER if any(c in v["op_share"] for v in results.values())]
    rows = [{"category": c, **{r: 100 * v["op_share"].get(c, 0.0) for r, v in results.items()}} for c in cats]
    print_table(rows, [("category", "category", "{}")] + [(r, r, "{:.1f}") for r in results])
    if fp:
        for r, v in results.items():
            v["ratio_to_fp"] = v["median_s"]["total"] / fp
    if ARGS.json:
        write_json(ARGS.json, {**info, "steps": n_steps, "warmup": ARGS.warmup,
                               "profile_steps": ARGS.profile_steps, "results": results})


if __name__ == "__main__":
    main()
