"""Helpers shared by minitbt's benchmark scripts (the rules live in docs/benchmark-rules.md).

A benchmark script starts like this, *before* anything imports NumPy, because the BLAS
reads its thread count when it is loaded:

    from _common import bench_args
    ARGS, UNSET = bench_args(__doc__)            # --threads (default 1), --json, --repeats, ...
    import numpy as np                           # now pinned to ARGS.threads
    from _common import alternate, blas_report, print_table, write_json

and then compares a baseline and one or more candidates with ``alternate``, which runs
them in turns (A B A B ...) after a warm-up and reports medians and ratios of medians.
This module imports NumPy only inside functions, never at import time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
# Some of these machines set these; they slow current NumPy/OpenBLAS (docs/benchmark-rules.md).
SLOW_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def pin_threads(threads: int, unset_slow: bool = True) -> list:
    """Set the BLAS/OpenMP thread variables to `threads`; unset SLOW_VARS in this process.

    Returns the names of the variables that were unset. Must run before NumPy is imported.
    """
    if "numpy" in sys.modules:
        warnings.warn("NumPy was imported before pin_threads(): "
                      "its BLAS may ignore the thread count")
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    if not unset_slow:
        return []
    return [v for v in SLOW_VARS if os.environ.pop(v, None) is not None]


def bench_args(description: str, add_arguments=None, argv=None):
    """Parse the common flags (plus `add_arguments(parser)`), pin threads; -> (args, unset vars)."""
    p = argparse.ArgumentParser(description=(description or "").strip().split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1,
                   help="threads for both sides: BLAS and minitbt kernels (default 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed samples per side (median taken)")
    p.add_argument("--warmup", type=int, default=2, help="untimed samples per side first")
    p.add_argument("--min-time", type=float, default=0.005,
                   help="seconds per sample at least (short calls are looped)")
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                   help="wall: perf_counter; cpu: this process's CPU time, which leaves out the "
                        "time other processes hold the core (robust on a shared machine, only "
                        "meaningful for one thread); auto (default): cpu if --threads 1, else wall")
    p.add_argument("--keep-env", action="store_true",
                   help="do not unset " + "/".join(SLOW_VARS))
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    if add_arguments is not None:
        add_arguments(p)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.clock == "auto":
        args.clock = "cpu" if args.threads == 1 else "wall"
    elif args.clock == "cpu" and args.threads > 1:
        p.error("--clock cpu adds up the CPU time of all threads; "
                "use --clock wall with --threads > 1")
    return args, pin_threads(args.threads, unset_slow=not args.keep_env)


# --------------------------------------------------------------------------- timing

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _per_call(fn, number: int, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    t0 = now()
    for _ in range(number):
        fn()
    return (now() - t0) / number


def calls_per_sample(fn, min_time: float, clock: str = "wall") -> int:
    """How many calls make one sample last at least `min_time` seconds (fn runs a few times)."""
    number = 1
    while True:
        t = _per_call(fn, number, clock) * number
        if t >= min_time or number >= 1 << 20:
            return number
        number *= 2 if t <= 0 else max(2, min(16, int(min_time / t) + 1))


def alternate(fns: dict, repeats: int = 7, warmup: int = 2, min_time: float = 0.005,
              baseline: str | None = None, clock: str = "wall") -> dict:
    """Time the callables in `fns` in turns: round = each fn once, in order; `warmup` rounds
    untimed, then `repeats` timed rounds. Short calls are looped so that a sample lasts at
    least `min_time` seconds. `clock` is "wall" (perf_counter) or "cpu" (process_time).

    Returns {name: {"median": s/call, "samples": [...], "number": calls/sample}}, and when
    `baseline` names one of the fns, each other entry also gets "ratio" =
    median(baseline) / median(it)  (> 1 means faster than the baseline).
    """
    numbers = {k: calls_per_sample(f, min_time, clock) for k, f in fns.items()}
    samples = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, f in fns.items():
            t = _per_call(f, numbers[k], clock)
            if r >= warmup:
                samples[k].append(t)
    out = {k: {"median": statistics.median(v), "samples": v, "number": numbers[k]}
           for k, v in samples.items()}
    if baseline is not None:
        for k in out:
            if k != baseline:
                out[k]["ratio"] = out[baseline]["median"] / out[k]["median"]
    return out


# --------------------------------------------------------------------------- reports

def blas_report() -> list:
    """The BLAS libraries NumPy loaded, with their thread counts (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl is not installed (pip install threadpoolctl)"}]
    import numpy  # noqa: F401  (load the BLAS so that it is listed)
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "filepath")
    return [{k: d.get(k) for k in keep if k in d} for d in threadpool_info()]


def blas_line(info: list) -> str:
    parts = []
    for d in info:
        if "note" in d:
            parts.append(d["note"])
        elif d.get("user_api") == "blas":
            parts.append(f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')}, "
                         f"{d.get('num_threads')} threads)")
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def machine_info() -> dict:
    import numpy as np
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}


def header(args, unset: list, extra: str = "") -> dict:
    """Print the context lines every report starts with; return them as a dict for JSON."""
    info = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "threads": args.threads, "clock": getattr(args, "clock", "wall"),
            "unset_env": unset, "machine": machine_info(), "blas": blas_report()}
    m = info["machine"]
    print(f"# {info['command']}")
    print(f"# {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}")
    print(f"# BLAS: {blas_line(info['blas'])}; threads pinned to {args.threads}; "
          f"clock: {info['clock']}" + (" (process CPU time)" if info["clock"] == "cpu" else ""))
    if unset:
        print(f"# unset in this process (they slow NumPy): {', '.join(unset)}")
    if extra:
        print(f"# {extra}")
    return info


def print_table(rows: list, columns: list) -> None:
    """rows: list of dicts; columns: list of (key, title, format) with format like '{:.2f}'."""
    cells = [[fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in columns]
             for r in rows]
    titles = [t for _, t, _ in columns]
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t)
              for i, t in enumerate(titles)]
    print("  ".join(t.rjust(w) for t, w in zip(titles, widths)))
    for c in cells:
        print("  ".join(x.rjust(w) for x, w in zip(c, widths)))


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    print(f"# wrote {path}")
