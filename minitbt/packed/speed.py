"""Decoding speed at batch 1: the harness of benchmarks/bench_decode.py and notebooks/05.

Sides, each decoding the same sources one at a time with a KV cache, for exactly ``max_len``
tokens (<eos> suppressed, so that every side does the same steps whatever the model predicts):

    packed        the packed model on the compiled decoder (minitbt/_decoder.h): the product
    runtime_fp32  the same compiled decoder with the dequantized weights in float32: the same
                  code but for the linear layers, so the bit kernels' own share shows
    float32       the full-precision model in minitbt's NumPy forward (the latent float weights)
    packed_numpy  the packed model in minitbt's NumPy forward (the reference the C is tested on)
    torch_fp32    the full-precision model ported to PyTorch (minitbt.torch), eager, float32

The sides run in turns, source by source (A B C ... A B C ...), ``repeats`` passes after
``warmup`` passes; per source the median over passes; tokens/s = tokens / sum of the medians.
The clock is the process's CPU time (one thread), so other processes on the machine do not
count (docs/benchmark-rules.md).
"""
from __future__ import annotations

import gzip
import os
import statistics
import time

import numpy as np

from minitbt.data import EOS


def test_sources(task: str, n: int, max_src_len: int) -> list:
    """The first n test sources of a task folder as (1, S) id arrays (<eos> last)."""
    from minitbt.data import encode, load_tokenizer
    with gzip.open(os.path.join(task, "test.source.gz"), "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(n), f)]
    ids = encode(load_tokenizer(task), lines)
    return [np.append(np.asarray(s[: max_src_len - 1]), EOS).astype(np.int32)[None] for s in ids]


def random_sources(vocab_size: int, n: int, seed: int = 0) -> list:
    """n random sources of 8 to 24 ids (a fresh model: speed does not depend on the words)."""
    rng = np.random.default_rng(seed)
    return [np.append(rng.integers(4, vocab_size, rng.integers(8, 24)), EOS).astype(np.int32)[None]
            for _ in range(n)]


def make_sides(fp_model, packed_model, which=("packed", "runtime_fp32", "float32", "packed_numpy", "torch_fp32")):
    """{name: decode(src, max_len) -> tokens} for the sides asked for (torch_fp32 only if torch
    is installed, the compiled ones only if minitbt._decoder was built)."""
    from minitbt.decode import greedy
    from minitbt.packed.compiled import HAVE_DECODER, compile_model

    def fixed(model):
        return lambda src, n: greedy(model, src, n, min_len=n)

    sides = {}
    for name in which:
        if name in ("packed", "runtime_fp32") and HAVE_DECODER:
            sides[name] = fixed(compile_model(packed_model, float_weights=name == "runtime_fp32"))
        elif name == "float32":
            sides[name] = fixed(fp_model)
        elif name == "packed_numpy":
            sides[name] = fixed(packed_model)
        elif name == "torch_fp32":
            try:
                import torch
                from minitbt.torch import convert, model as tmodel
            except ImportError:
                continue
            torch.set_num_threads(1)
            port = convert.to_torch(fp_model).eval()
            sides[name] = lambda src, n, port=port: tmodel.greedy(port, src, n, min_len=n)
    return sides


def run_in_turns(sides: dict, sources: list, max_len: int, repeats: int = 3, warmup: int = 1,
                 clock: str = "cpu") -> dict:
    """{name: {"tokens_per_s", "seconds", "tokens"}}: every side decodes every source, in turns."""
    now = {"cpu": time.process_time, "wall": time.perf_counter}[clock]
    for _ in range(warmup):
        for fn in sides.values():
            for src in sources[:2]:
                fn(src, max_len)
    times = {name: [[] for _ in sources] for name in sides}
    for _ in range(repeats):
        for i, src in enumerate(sources):
            for name, fn in sides.items():
                t0 = now()
                fn(src, max_len)
                times[name][i].append(now() - t0)
    n = max_len * len(sources)                       # every side: max_len steps per source
    result = {}
    for name in sides:
        seconds = sum(statistics.median(t) for t in times[name])
        result[name] = {"tokens_per_s": n / seconds, "seconds": seconds, "tokens": n}
    return result


def ratios(result: dict) -> dict:
    """The packed side's tokens/s over each other side's: ratio_packed_vs_<side>."""
    if "packed" not in result:
        return {}
    p = result["packed"]["tokens_per_s"]
    return {f"ratio_packed_vs_{name}": p / r["tokens_per_s"] for name, r in result.items() if name != "packed"}


def step_profile(compiled_model, src, max_len: int) -> dict:
    """Where one decoding step's time goes in the compiled decoder: seconds per part, summed over
    the steps of one greedy decoding of ``src`` (the decoder's own timers, CPU time)."""
    dec = compiled_model.decoder
    dec.profile(True)
    try:
        compiled_model.greedy(src, max_len, min_len=max_len)
        return dec.profile_result()
    finally:
        dec.profile(False)
