"""minitbt's bit kernels against NumPy float32 matmul of the same shape (docs/benchmark-rules.md).

    python benchmarks/bench_kernels.py                      # all shapes, 1 thread
    python benchmarks/bench_kernels.py --quick              # 3 GEMM shapes + the 2 GEMVs
    python benchmarks/bench_kernels.py --threads 2 --json bench_kernels.json
    python benchmarks/bench_kernels.py --kernels bcq_lut --bcq-bits 3   # the binary-coding LUT kernel
    python benchmarks/bench_kernels.py --paths all          # every path this CPU has, side by side
    MINITBT_KERNEL_PATH=avx2 python benchmarks/bench_kernels.py         # a lower path only

Baseline: ``x @ wT`` with x (M, K) float32 and the weight pre-transposed to a contiguous
(K, N) float32 array, as a user would hold it. Candidates get their operands packed or
prepared beforehand (packing is excluded from the timing). Each shape runs the baseline
and every candidate in turns (A B C ... A B C ...), after a warm-up; the table shows the
medians, GMAC/s (M*K*N / time) and the ratio of medians (baseline / kernel, > 1 = faster).
With one thread the clock is the process's CPU time by default (--clock cpu), so that the
time other processes hold the core on a shared machine is left out; --clock wall to compare.

The binary-coding LUT kernel (bcq_lut: k-bit weights W = sum_i a_i b_i, float32 activations,
kernels.gemm_bcq_lut) runs on shapes of its own (BCQ_SHAPES: batch-1 GEMVs and M = 16), with
k = --bcq-bits planes; it has no target in docs/benchmark-rules.md.

Paths (minitbt/_dispatch.h): by default each kernel runs on the path the kernels chose at import
(the best this CPU has, or the one MINITBT_KERNEL_PATH names); --paths all runs every path this
CPU has (portable C, AVX2, AVX-512) as separate candidates in the same turns, --paths avx2,avx512
a list. Every row and summary line names its path; the targets are per path (AVX2, AVX-512) and
the portable C has none. The header shows kernels.info(): the path and instruction per kernel.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_args  # noqa: E402


def _extra(p):
    p.add_argument("--quick", action="store_true", help="a subset of the GEMM shapes")
    p.add_argument("--kernels", default="all",
                   help="comma-separated subset of: "
                        "w1a1,w1a2,w2a2,tt,w2a2_i8,w2a8,gemv_i8,gemv_f32,bcq_lut")
    p.add_argument("--bcq-bits", type=int, default=3, help="planes k of the bcq_lut weights (default 3)")
    p.add_argument("--paths", default="chosen",
                   help="kernel paths to time: chosen (default: the one picked at import), all "
                        "(every one this CPU has), or a comma-separated list of portable,avx2,avx512")


ARGS, UNSET = bench_args(__doc__, _extra)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _common import alternate, header, print_table, write_json  # noqa: E402
from minitbt import kernels as kn  # noqa: E402

# kernel key -> (label, {path: target}) (docs/benchmark-rules.md; the portable C has none)
KERNELS = {
    "w1a1": ("W1A1 xnor-popcount", {"avx2": 6.0, "avx512": 12.0}),
    "w1a2": ("W1A2 bitplane (binary w)", {"avx2": 2.0, "avx512": 3.0}),
    "w2a2": ("W2A2 bitplane (ternary w)", {"avx2": 2.0, "avx512": 3.0}),
    "tt": ("W2A2 ternary x ternary", {"avx2": 2.0, "avx512": 3.0}),
    "w2a2_i8": ("W2A2 codes as int8", {"avx2": 2.0, "avx512": 3.0}),
    "w2a8": ("W2A8 ternary x int8", {"avx2": 2.0, "avx512": 3.0}),
    "gemv_i8": ("GEMV ternary x int8", {"avx2": 6.0, "avx512": 10.0}),
    "gemv_f32": ("GEMV ternary x fp32 sign-add", {"avx2": 6.0, "avx512": 6.0}),
    "bcq_lut": ("bcq k-bit x fp32 LUT", {}),
}
# the kernels.info() name whose path and instruction each key reports
INFO_NAME = {"w1a1": "gemm_xnor", "w1a2": "gemm_bitplane_pm1", "w2a2": "gemm_bitplane",
             "tt": "gemm_ternary_ternary", "w2a2_i8": "gemm_ternary_int8",
             "w2a8": "gemm_ternary_int8", "gemv_i8": "gemv_ternary_int8",
             "gemv_f32": "gemm_signadd_f32", "bcq_lut": "gemm_bcq_lut"}
GEMM_KERNELS = ("w1a1", "w1a2", "w2a2", "tt", "w2a2_i8", "w2a8")
GEMV_KERNELS = ("gemv_i8", "gemv_f32", "w1a1")

if ARGS.quick:
    GEMM_SHAPES = [(16, 512, 2048), (64, 768, 3072), (256, 2048, 3072)]
else:
    GEMM_SHAPES = [(M, K, N) for M in (16, 64, 256) for K in (512, 768, 2048) for N in (2048, 3072)]
GEMV_SHAPES = [(1, 768, 3072), (1, 2048, 8192)]
BCQ_SHAPES = [(1, 512, 512), (1, 1024, 1024), (1, 768, 3072), (1, 2048, 8192),
              (16, 512, 512), (16, 1024, 1024), (16, 768, 3072)]


def candidates(M, K, N, keys, rng, threads):
    """Operands packed/prepared once; returns {key: zero-argument callable}."""
    x = rng.standard_normal((M, K)).astype(np.float32)
    codes = rng.integers(-1, 2, size=(N, K))                   # ternary weights
    signs = rng.choice([-1, 1], size=(N, K))                   # binary weights
    a_sign = kn.pack_signs(x)
    a_codes = rng.integers(0, 4, size=(M, K))                  # unsigned 2-bit activations
    a_pl = kn.pack_bitplanes(a_codes, 2)
    a_tern = kn.pack_ternary(rng.integers(-1, 2, size=(M, K)))
    w_sign, w_tern = kn.pack_signs(signs), kn.pack_ternary(codes)
    x8 = rng.integers(-127, 128, size=(M, K)).astype(np.int8)
    fns = {}
    for key in keys:
        if key == "w1a1":
            fns[key] = lambda: kn.gemm_xnor(a_sign, w_sign, K, threads=threads)
        elif key == "w1a2":
            fns[key] = lambda: kn.gemm_bitplane_pm1(a_pl, w_sign, K, threads=threads)
        elif key == "w2a2":
            fns[key] = lambda: kn.gemm_bitplane(a_pl, w_tern, K, threads=threads)
        elif key == "tt":
            fns[key] = lambda: kn.gemm_ternary_ternary(a_tern, w_tern, K, threads=threads)
        elif key in ("w2a8", "gemv_i8"):
            prep = kn.prepare_ternary_int8(codes)
            fns[key] = lambda prep=prep: kn.gemm_ternary_int8(x8, prep, threads=threads)
        elif key == "w2a2_i8":                 # the same W2A2 product, 2-bit codes held as int8
            prep, a8 = kn.prepare_ternary_int8(codes), a_codes.astype(np.int8)
            fns[key] = lambda prep=prep, a8=a8: kn.gemm_ternary_int8(a8, prep, threads=threads)
        elif key == "gemv_f32":
            prep = kn.prepare_signadd(codes)
            fns[key] = lambda prep=prep: kn.gemm_signadd_f32(x, prep, threads=threads)
        elif key == "bcq_lut":                 # k sign planes and k scales per row
            k = ARGS.bcq_bits
            prep = kn.prepare_bcq_lut(rng.choice(np.array([-1, 1], np.int8), size=(k, N, K)),
                                      rng.uniform(0.01, 1.0, size=(k, N)).astype(np.float32))
            fns[key] = lambda prep=prep: kn.gemm_bcq_lut(x, prep, threads=threads)
    return x, fns


def _on_path(fn, path):
    """fn run on a kernel path (switching costs well under a microsecond)"""
    def run():
        kn._core.set_kernel_path(path)
        return fn()
    return run


def _kernel_path(key, path):
    """the path kernel `key` really runs on path `path` (bcq_lut has no AVX-512 form)"""
    with kn.use_path(path):
        return kn.info()["kernels"][INFO_NAME[key]]["path"]


def run_shape(M, K, N, keys, rng, paths):
    x, fns = candidates(M, K, N, keys, rng, ARGS.threads)
    wT = np.ascontiguousarray(rng.standard_normal((K, N)).astype(np.float32))
    cands = {f"{key}@{p}": _on_path(fns[key], p) for key in keys for p in paths}
    timed = alternate({"numpy": lambda: x @ wT, **cands}, repeats=ARGS.repeats,
                      warmup=ARGS.warmup, min_time=ARGS.min_time, baseline="numpy",
                      clock=ARGS.clock)
    macs = M * K * N
    base = timed["numpy"]["median"]
    rows = []
    for key in keys:
        label, targets = KERNELS[key]
        if key == "bcq_lut":
            label = f"bcq {ARGS.bcq_bits}-bit x fp32 LUT"
        for p in paths:
            kpath = _kernel_path(key, p)
            target = None if (key == "w1a1" and M == 1) else targets.get(kpath)  # M = 1: context
            t = timed[f"{key}@{p}"]
            rows.append({"kernel": label, "key": key, "path": kpath, "M": M, "K": K, "N": N,
                         "base_ms": base * 1e3, "kern_ms": t["median"] * 1e3,
                         "base_gmacs": macs / base / 1e9, "kern_gmacs": macs / t["median"] / 1e9,
                         "ratio": t["ratio"], "target": target,
                         "met": None if target is None else bool(t["ratio"] >= target)})
    return rows


def _paths():
    if not kn.HAVE_EXT:
        sys.exit("minitbt._core is not built: nothing to time (pip install -e .)")
    if ARGS.paths == "chosen":
        return [kn.kernel_path()]
    if ARGS.paths == "all":
        return kn.available_paths()
    want = ARGS.paths.split(",")
    missing = [p for p in want if p not in kn.available_paths()]
    if missing:
        sys.exit(f"paths {missing} are not available here; this CPU runs {kn.available_paths()}")
    return want


def main():
    keys = list(KERNELS) if ARGS.kernels == "all" else ARGS.kernels.split(",")
    unknown = [k for k in keys if k not in KERNELS]
    if unknown:
        sys.exit(f"unknown kernels: {unknown}; choose from {list(KERNELS)}")
    paths = _paths()
    kinfo = kn.info()
    info = header(ARGS, UNSET, extra=f"minitbt kernels: CPU's best path {kinfo['cpu']}, chosen "
                  f"{kinfo['path']} (MINITBT_KERNEL_PATH={kinfo['env']}), timed {paths}, "
                  f"OpenMP {kinfo['openmp']}")
    for p in paths:
        with kn.use_path(p):
            used = {k: kn.info()["kernels"][INFO_NAME[k]] for k in keys}
        print(f"# path {p}: " + "; ".join(f"{k} {u['path']} ({u['instruction']})"
                                            for k, u in used.items()))
    rng = np.random.default_rng(0)
    rows = []
    gemm_keys = [k for k in keys if k in GEMM_KERNELS]
    gemv_keys = [k for k in keys if k in GEMV_KERNELS]
    if gemm_keys:
        for M, K, N in GEMM_SHAPES:
            rows += run_shape(M, K, N, gemm_keys, rng, paths)
    if gemv_keys:
        for M, K, N in GEMV_SHAPES:
            rows += run_shape(M, K, N, gemv_keys, rng, paths)
    if "bcq_lut" in keys:
        for M, K, N in BCQ_SHAPES:
            rows += run_shape(M, K, N, ["bcq_lut"], rng, paths)
    kn.set_kernel_path(kinfo["path"])

    cols = [("kernel", "kernel", "{}"), ("path", "path", "{}"), ("M", "M", "{}"), ("K", "K", "{}"),
            ("N", "N", "{}"), ("base_ms", "numpy ms", "{:.3f}"), ("kern_ms", "kernel ms", "{:.3f}"),
            ("base_gmacs", "numpy GMAC/s", "{:.1f}"), ("kern_gmacs", "kernel GMAC/s", "{:.1f}"),
            ("ratio", "ratio", "{:.2f}x"), ("target", "target", "{:.0f}x")]
    print_table(rows, cols)

    print("\n# summary: ratio of medians over the shapes (min / median / max) against the target")
    summary = []
    for key in keys:
        for p in dict.fromkeys(r["path"] for r in rows if r["key"] == key):
            target = KERNELS[key][1].get(p)
            rs = [r for r in rows if r["key"] == key and r["path"] == p
                  and not (key == "w1a1" and r["M"] == 1)]           # W1A1 GEMVs: context only
            if not rs:
                continue
            ratios = [r["ratio"] for r in rs]
            med = float(np.median(ratios))
            summary.append({"kernel": rs[0]["kernel"], "key": key, "path": p, "shapes": len(rs),
                            "min": min(ratios), "median": med, "max": max(ratios),
                            "target": target, "median_met": None if target is None else med >= target,
                            "shapes_met": None if target is None
                            else f"{sum(x >= target for x in ratios)}/{len(ratios)}"})
    print_table(summary, [("kernel", "kernel", "{}"), ("path", "path", "{}"),
                          ("shapes", "shapes", "{}"), ("min", "min", "{:.2f}x"),
                          ("median", "median", "{:.2f}x"), ("max", "max", "{:.2f}x"),
                          ("target", "target", "{:.0f}x"), ("median_met", "median >= target", "{}"),
                          ("shapes_met", "shapes >= target", "{}")])
    if ARGS.json:
        write_json(ARGS.json, {**info, "kernel_info": kinfo, "paths": paths,
                               "repeats": ARGS.repeats, "warmup": ARGS.warmup,
                               "results": rows, "summary": summary})


if __name__ == "__main__":
    main()
