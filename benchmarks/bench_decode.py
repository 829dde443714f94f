"""Greedy decoding at batch 1: the packed model on the compiled decoder against float and PyTorch.

    python benchmarks/bench_decode.py                          # the shipped 2-2-8 model + d_model 512
    python benchmarks/bench_decode.py --json docs/runs/bench_decode.json
    python benchmarks/bench_decode.py --model models/ddtp-en-de-1-1-1.npz --no-large

The sides and how they are timed: minitbt/packed/speed.py (packed, runtime_fp32, float32,
packed_numpy, torch_fp32; every side decodes exactly --max-len tokens per source, in turns,
CPU time of one thread). Two models:

* the shipped model (--model, a QAT checkpoint: its float32 side runs its latent float weights)
  on the first --sentences test sentences;
* a fresh model at d_model 512, 8 heads, d_ff 2048, 6 + 6 layers, vocabulary 8,000, quantized
  with --recipe and its scales set on one random batch (untrained: speed does not depend on the
  weights), on random sources; here the linear layers dominate a step.

The JSON carries ratio_packed_vs_<side> for each model, and where one step's time goes in the
compiled decoder (its own timers, speed.step_profile).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_args  # noqa: E402  (imports no NumPy)


def _flags(p):
    p.set_defaults(repeats=3, warmup=1)
    p.add_argument("--model", default="models/ddtp-en-de-2-2-8.npz", help="a QAT checkpoint (default: the shipped 2-2-8)")
    p.add_argument("--task", default="data/ddtp-en-de", help="its task folder (test sources, tokenizer)")
    p.add_argument("--sentences", type=int, default=20, help="test sentences (default 20)")
    p.add_argument("--max-len", type=int, default=32, help="tokens decoded per sentence (default 32)")
    p.add_argument("--recipe", default="2-2-8", help="the fresh large model's recipe (default 2-2-8)")
    p.add_argument("--large-sentences", type=int, default=6, help="sources for the d_model 512 model (default 6)")
    p.add_argument("--no-large", action="store_true", help="skip the d_model 512 model")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")


ARGS, UNSET = bench_args(__doc__, _flags)

import numpy as np  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from _common import header, print_table, write_json  # noqa: E402
from minitbt.model_io import build_model, load_latent_fp, load_model, quantize  # noqa: E402
from minitbt.packed import pack_model  # noqa: E402
from minitbt.packed import speed  # noqa: E402
from minitbt.packed.compiled import compile_model  # noqa: E402
from minitbt.tensor import no_grad  # noqa: E402

SIDES = ("packed", "runtime_fp32", "float32", "packed_numpy") + (() if ARGS.no_torch else ("torch_fp32",))
LARGE = dict(vocab_size=8000, d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6,
             max_len=128, dropout=0.0)


def shipped():
    path = os.path.join(ROOT, ARGS.model)
    q, meta = load_model(path)
    if not meta.get("quant"):
        sys.exit(f"{ARGS.model} is not a quantization-aware checkpoint")
    srcs = speed.test_sources(os.path.join(ROOT, ARGS.task), ARGS.sentences, q.config.max_len)
    return load_latent_fp(path).eval(), q.eval(), srcs, f"{ARGS.model} ({q.quant_recipe.name})"


def large():
    fp = build_model(**LARGE).eval()
    q = quantize(fp, ARGS.recipe).eval()
    srcs = speed.random_sources(LARGE["vocab_size"], ARGS.large_sentences)
    with no_grad():                                   # first-batch initialisation of the learned scales
        q(srcs[0], srcs[0][:, :4])
    return fp, q, srcs, f"fresh d_model 512, 6+6 layers, {ARGS.recipe}"


def run(name, fp, q, srcs, what, sides):
    print(f"\n## {name}: {what}; {len(srcs)} sources x {ARGS.max_len} tokens")
    p = pack_model(q)
    result = speed.run_in_turns(speed.make_sides(fp, p, sides), srcs, ARGS.max_len, ARGS.repeats,
                                ARGS.warmup, ARGS.clock if ARGS.clock != "auto" else "cpu")
    print_table([{"side": k, **v} for k, v in result.items()],
                [("side", "side", "{}"), ("tokens_per_s", "tokens/s", "{:.1f}"), ("seconds", "seconds", "{:.2f}")])
    rat = speed.ratios(result)
    for k, v in rat.items():
        print(f"{k}: {v:.2f}x")
    prof = speed.step_profile(compile_model(p), srcs[0], ARGS.max_len)
    total = sum(prof.values())
    print("one greedy decoding on the compiled decoder, where the time goes:")
    for part, sec in sorted(prof.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * sec / total:5.1f}%  {part}")
    return {"what": what, "sources": len(srcs), "max_len": ARGS.max_len, "sides": result, **rat,
            "step_profile_seconds": prof}


def main():
    info = header(ARGS, UNSET)
    out = {**info, "shipped": run("shipped", *shipped(), SIDES)}
    if not ARGS.no_large:
        out["d512"] = run("d_model 512", *large(), SIDES)
    if ARGS.json:
        write_json(ARGS.json, out)


if __name__ == "__main__":
    main()
