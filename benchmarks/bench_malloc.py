"""Keeping freed memory (minitbt/malloc.py) against the C library's default, on training steps.

    python benchmarks/bench_malloc.py                                   # 2-2-2; 3 processes a side
    python benchmarks/bench_malloc.py --recipes fp,2-2-2 --repeats 3 --json docs/runs/bench_malloc.json

The setting holds for a whole process, so one sample is one process: benchmarks/profile_qat_step.py
(the step train.py runs: the d_model 192 `small` student, its FP teacher, 3,000-token batches) with
`--malloc default` or `--malloc keep`, the two sides in turns (A B A B ...). A sample is the median
step of its process on the CPU-time clock, which counts the kernel's time (page faults) as well as
the process's own; the figure is the ratio of the medians over the processes of each side. Both
sides step on the same batches and must give the same losses (checked: the setting moves memory,
not arithmetic).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_args  # noqa: E402  (imports no NumPy)


def _flags(p):
    p.set_defaults(repeats=3, warmup=1)
    p.add_argument("--steps", type=int, default=3, help="timed steps in each process")
    p.add_argument("--recipes", default="2-2-2", help="comma-separated; fp = full precision")


ARGS, UNSET = bench_args(__doc__, _flags)
HERE = os.path.dirname(os.path.abspath(__file__))
SIDES = ("default", "keep")


def sample(malloc: str, out: str) -> dict:
    """One process of profile_qat_step.py with --malloc; its JSON results."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}   # the library's own defaults
    cmd = [sys.executable, os.path.join(HERE, "profile_qat_step.py"), "--malloc", malloc,
           "--recipes", ARGS.recipes, "--steps", str(ARGS.steps), "--warmup", str(ARGS.warmup),
           "--profile-steps", "0", "--threads", str(ARGS.threads), "--json", out]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def main():
    from _common import header, print_table, write_json

    info = header(ARGS, UNSET, extra=f"{ARGS.repeats} processes a side, in turns; {ARGS.warmup} warm-up + "
                  f"{ARGS.steps} timed steps each")
    runs = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ARGS.repeats):
            for side in SIDES:
                runs[side].append(sample(side, os.path.join(tmp, f"{side}{i}.json")))
                print(f"# {side} {i + 1}/{ARGS.repeats}: " + ", ".join(
                    f"{r} {1e3 * v['median_s']['total']:.0f} ms" for r, v in runs[side][-1]["results"].items()))
    rows, results = [], {}
    for recipe in ARGS.recipes.split(","):
        med = {s: statistics.median(r["results"][recipe]["median_s"]["total"] for r in runs[s]) for s in SIDES}
        losses = {s: runs[s][0]["results"][recipe]["losses"] for s in SIDES}
        if losses["default"] != losses["keep"]:
            raise SystemExit(f"{recipe}: the losses differ between the sides: {losses}")
        results[recipe] = {"step_s": med, "ratio": med["keep"] / med["default"], "losses": losses["keep"]}
        rows.append({"recipe": recipe, "default": 1e3 * med["default"], "keep": 1e3 * med["keep"],
                     "ratio": med["keep"] / med["default"]})
    print("\n# training step per 3,000 target tokens, CPU ms (user + kernel), median over processes")
    print_table(rows, [("recipe", "recipe", "{}"), ("default", "C library default", "{:.0f}"),
                       ("keep", "keep_freed_memory()", "{:.0f}"), ("ratio", "keep / default", "{:.2f}")])
    if ARGS.json:
        write_json(ARGS.json, {**info, "steps": ARGS.steps, "warmup": ARGS.warmup, "results": results})


if __name__ == "__main__":
    main()
