"""One training step of the reference Seq2Seq Transformer: minitbt against the same model in PyTorch.

    python benchmarks/bench_train_step.py                 # 1 thread
    python benchmarks/bench_train_step.py --threads 2 --json out.json

A step = forward, cross-entropy (label smoothing 0.1, padding ignored), backward, AdamW step,
zero_grad. Reference configuration: d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000,
batch 32, source 48 tokens, target 24 tokens, dropout 0.1, post-LN, tied embeddings, ReLU.
The PyTorch model (minitbt.torch.Seq2SeqTransformer) is minitbt's model module for module (embedding *
sqrt(d) + learned positions, LayerNorm on the embeddings, post-LN residual blocks, tied output).
Both sides run on the same thread count and the same batch; the steps alternate
(torch, minitbt, torch, minitbt, ...) after a warm-up; we report medians and their ratio.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_args  # noqa: E402  (imports no NumPy)


def _flags(p):
    p.set_defaults(repeats=10, warmup=3)
    p.add_argument("--only", choices=("both", "minitbt", "torch"), default="both", help="time one side only")
    p.add_argument("--profile", type=int, metavar="N", default=0,
                   help="after timing, cProfile 3 minitbt steps and print the N most expensive functions")


# Threads are pinned (and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset) before NumPy or PyTorch load.
ARGS, UNSET = bench_args(__doc__, _flags)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minitbt as mt  # noqa: E402
from minitbt import functional as F  # noqa: E402

CFG = dict(vocab_size=8000, d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3,
           dropout=0.1, pre_ln=False, positions="learned", tie_embeddings=True, activation="relu", max_len=256)
BATCH, SRC_LEN, TGT_LEN, PAD, SMOOTHING, LR = 32, 48, 24, 0, 0.1, 5e-4


def make_batch(seed=0):
    """Random ids with padded tails of varying length (so the padding masks do real work)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(3, CFG["vocab_size"], (BATCH, SRC_LEN))
    tgt = rng.integers(3, CFG["vocab_size"], (BATCH, TGT_LEN + 1))
    for b in range(BATCH):
        src[b, rng.integers(SRC_LEN * 2 // 3, SRC_LEN + 1):] = PAD
        tgt[b, rng.integers(TGT_LEN * 2 // 3, TGT_LEN + 2):] = PAD
    tgt[:, 0] = 1                                          # bos
    return src, tgt[:, :-1].copy(), tgt[:, 1:].copy()      # src, decoder input, labels


# ---- minitbt -------------------------------------------------------------------------------------
def minitbt_step_fn(batch):
    model = mt.nn.Seq2SeqTransformer(mt.nn.TransformerConfig(**CFG)).train()
    opt = mt.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    src, tgt_in, labels = batch
    V = CFG["vocab_size"]

    def step():
        logits = model(src, tgt_in)                                       # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=PAD,
                               label_smoothing=SMOOTHING)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()
    step.n_params = model.num_parameters()
    return step


# ---- the same model in PyTorch ---------------------------------------------------------------------
def torch_step_fn(batch):
    import torch
    import torch.nn.functional as tF
    from minitbt.nn import TransformerConfig
    from minitbt.torch import Seq2SeqTransformer         # the same model in PyTorch (imports torch)

    V = CFG["vocab_size"]
    model = Seq2SeqTransformer(TransformerConfig(**CFG)).train()   # torch's generator seeded with seed 0
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    src, tgt_in, labels = (torch.from_numpy(a).long() for a in batch)

    def step():
        logits = model(src, tgt_in)
        loss = tF.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=PAD,
                                label_smoothing=SMOOTHING)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    step.n_params = sum(p.numel() for p in model.parameters())
    return step, torch


# ---- timing -----------------------------------------------------------------------------------------
def main():
    from _common import alternate, header, print_table, write_json

    batch = make_batch()
    sides, losses = {}, {}
    if ARGS.only in ("both", "torch"):
        tstep, torch = torch_step_fn(batch)
        torch.set_num_threads(ARGS.threads)
        sides["torch"] = tstep
    if ARGS.only in ("both", "minitbt"):
        sides["minitbt"] = minitbt_step_fn(batch)

    def recording(name, fn):                               # keep each step's loss (a sanity check)
        losses[name] = []
        return lambda: losses[name].append(fn())

    info = header(ARGS, UNSET, extra=(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
                                      if "torch" in sides else "") +
                  "parameters: " + ", ".join(f"{k} {fn.n_params:,}" for k, fn in sides.items()))
    print(f"# one step = forward + loss + backward + AdamW + zero_grad; {ARGS.warmup} warm-up + "
          f"{ARGS.repeats} timed steps per side, alternating")
    res = alternate({k: recording(k, fn) for k, fn in sides.items()}, repeats=ARGS.repeats,
                    warmup=ARGS.warmup, min_time=ARGS.min_time, clock=ARGS.clock)
    rows = [{"side": k, "median": 1e3 * r["median"], "min": 1e3 * min(r["samples"]),
             "max": 1e3 * max(r["samples"]), "loss": f"{losses[k][0]:.3f} / {losses[k][-1]:.3f}"}
            for k, r in res.items()]
    print()
    print_table(rows, [("side", "", "{}"), ("median", "median ms", "{:.1f}"), ("min", "min ms", "{:.1f}"),
                       ("max", "max ms", "{:.1f}"), ("loss", "first / last loss", "{}")])
    out = {**info, "config": CFG, "batch": {"batch": BATCH, "src_len": SRC_LEN, "tgt_len": TGT_LEN},
           "parameters": {k: fn.n_params for k, fn in sides.items()},
           "median_s": {k: r["median"] for k, r in res.items()},
           "samples_s": {k: r["samples"] for k, r in res.items()}}
    if len(sides) == 2:
        ratio = res["minitbt"]["median"] / res["torch"]["median"]
        out["ratio_minitbt_over_torch"] = ratio
        print(f"\nminitbt / torch step time (ratio of medians): {ratio:.2f}x   (target <= 1.25x, stretch <= 1.0x)")
    if ARGS.json:
        write_json(ARGS.json, out)
    if ARGS.profile and "minitbt" in sides:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.runcall(lambda: [sides["minitbt"]() for _ in range(3)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(ARGS.profile)


if __name__ == "__main__":
    main()
