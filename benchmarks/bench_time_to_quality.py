"""Time to quality: the same Seq2Seq Transformer trained for the same minutes in minitbt and in PyTorch.

    python benchmarks/bench_time_to_quality.py --side minitbt --preset tiny --minutes 10 --json runs/ttq-minitbt.json
    python benchmarks/bench_time_to_quality.py --side torch   --preset tiny --minutes 10 --json runs/ttq-torch.json
    python benchmarks/bench_time_to_quality.py --compare runs/ttq-minitbt.json runs/ttq-torch.json   # a table

Each run trains one side (one process per side) and reports the quality it reaches: BLEU/chrF
for a translation task, ROUGE-1/2/L for a summarization task, from greedy decoding. Both sides
share everything but the framework: the preset's config (minitbt.train.config_from_preset), the
task's tokenizer and data, the length-bucketed batches in the same order (seed + epoch), the
warm-up/decay schedule (minitbt.optim.lr_schedule over the preset's max_steps), AdamW with
minitbt's betas/eps/weight decay (none on 1-D parameters), gradient clipping, label-smoothed
cross-entropy, and even the initial weights (the torch side copies minitbt's; --own-init for
torch's). Dropout masks and float rounding differ.

Only training steps count toward --minutes (evaluation is excluded). A run stops at --minutes
or at the preset's max_steps, whichever comes first; the learning-rate schedule runs over
max_steps, so a side cut by --minutes stops before its learning rate has decayed (--compare
warns when the two sides stopped for different reasons). The torch side checks once that its
logits equal minitbt's on the same weights (the JSON's twin_logit_gap). Every --eval-every-minutes of training
both sides decode the first --eval-sentences validation pairs (sorted by source length, in
batches of 32, max_len = max_tgt_len) and add a point to the curve; at the end they do it once
more, and with --test decode the whole test split too.

The two sides are meant to run at the same time, one thread each (the default --threads 1),
one process per core: both then see the same machine load, and "minutes" mean the same thing.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import CLOCKS, bench_args, print_table  # noqa: E402  (imports no NumPy)


def _flags(p):
    p.set_defaults(clock="wall")                            # time to quality is wall time
    p.add_argument("--side", choices=("minitbt", "torch"), help="which framework trains")
    p.add_argument("--preset", default="tiny", help="minitbt.train preset (tiny, small, test)")
    p.add_argument("--task", default="data/ddtp-en-de", help="task folder")
    p.add_argument("--minutes", type=float, default=10.0, help="training minutes (evaluation excluded)")
    p.add_argument("--eval-every-minutes", type=float, default=2.0, help="evaluate after this much training")
    p.add_argument("--eval-sentences", type=int, default=200, help="validation pairs decoded per evaluation")
    p.add_argument("--test", action="store_true", help="at the end, also decode the whole test split")
    p.add_argument("--own-init", action="store_true", help="torch side: torch's own init, not minitbt's weights")
    p.add_argument("--compare", nargs=2, metavar=("A_JSON", "B_JSON"), help="print a table of two runs and exit")


# Threads are pinned (and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset) before NumPy or PyTorch load.
ARGS, UNSET = bench_args(__doc__, _flags)


def main_metrics(kind):
    return ["bleu", "chrf"] if kind == "translation" else ["rouge1", "rouge2", "rougeL"]


# ---- the two sides: step(batch, lr) -> loss, greedy(src, max_len) -> id lists -------------------
class MinitbtSide:
    def __init__(self, mcfg: dict, cfg):
        from minitbt import optim
        from minitbt.model_io import build_model
        self.cfg, self.optim = cfg, optim
        self.model = build_model(**mcfg)
        self.model.train()
        self.opt = optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.n_params = self.model.num_parameters()

    def step(self, batch, lr: float) -> float:             # the step of minitbt.train.train
        from minitbt.train import compute_loss
        self.opt.lr = lr
        loss = compute_loss(self.model, batch, self.cfg)   # label-smoothed CE over (B*T, V)
        self.opt.zero_grad()
        loss.backward()
        self.optim.clip_grad_norm(self.opt.params, self.cfg.clip)
        self.opt.step()
        return loss.item()

    def greedy(self, src, max_len: int) -> list:
        from minitbt.decode import greedy
        self.model.eval()
        try:
            return greedy(self.model, src, max_len=max_len)
        finally:
            self.model.train()


class TorchSide:
    def __init__(self, mcfg: dict, cfg, own_init: bool):
        import inspect
        import torch
        from minitbt import optim
        from minitbt.model_io import build_model
        from minitbt.nn import TransformerConfig
        from minitbt.torch import Seq2SeqTransformer, to_torch    # the same model in PyTorch
        torch.set_num_threads(ARGS.threads)
        self.torch, self.cfg = torch, cfg
        self.parity = None
        if own_init:                                        # torch's generator, seeded with the config's seed
            self.model = Seq2SeqTransformer(TransformerConfig(**mcfg))
        else:                                               # start from minitbt's initial weights
            twin = build_model(**mcfg)
            self.model = to_torch(twin)
            self.parity = self._logit_gap(twin)
        self.model.train()
        # minitbt's AdamW: its betas and eps; decoupled weight decay on >= 2-D parameters only
        defaults = inspect.signature(optim.AdamW).parameters
        params = list(self.model.parameters())
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=defaults["betas"].default,
                                     eps=defaults["eps"].default)
        self.params, self.n_params = params, sum(p.numel() for p in params)

    def _logit_gap(self, twin) -> float:
        """Largest |logit difference| of the two models (eval mode, same weights) on a small batch:
        evidence that the PyTorch model computes minitbt's function, not just matches its names."""
        import numpy as np
        rng = np.random.default_rng(0)
        V = twin.config.vocab_size
        src, tgt = rng.integers(3, V, (2, 9)), rng.integers(3, V, (2, 7))
        src[1, 6:] = 0                                      # padding, so the masks are exercised
        twin.eval(), self.model.eval()
        with self.torch.no_grad():
            theirs = self.model(self.torch.from_numpy(src), self.torch.from_numpy(tgt)).numpy()
        gap = float(np.abs(twin(src, tgt).data - theirs).max())     # (2, 7, V)
        self.model.train()
        if gap > 1e-3:
            raise RuntimeError(f"the PyTorch model's logits differ from minitbt's by {gap:.2e}")
        return gap

    def step(self, batch, lr: float) -> float:
        import torch.nn.functional as tF
        torch = self.torch
        for g in self.opt.param_groups:
            g["lr"] = lr
        src, tgt_in, tgt_out = (torch.from_numpy(a).long() for a in (batch.src, batch.tgt_in, batch.tgt_out))
        logits = self.model(src, tgt_in)                   # (B, T, V)
        loss = tF.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=0,
                                label_smoothing=self.cfg.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip:                                  # minitbt: clip 0 = no clipping
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        self.opt.step()
        return loss.item()

    def greedy(self, src, max_len: int) -> list:
        from minitbt.torch import greedy
        return greedy(self.model, src, max_len)            # eval mode, no_grad, back to train mode


# ---- evaluation: greedy decoding of a split's first n pairs, batches sorted by source length ------
def evaluate(side, data, n: int, tokenizer, kind: str, max_len: int, batch_size: int = 32) -> dict:
    import numpy as np
    from minitbt import metrics
    from minitbt.data import decode
    n = min(n, len(data))
    order = np.argsort(data.src_len[:n], kind="stable")    # similar lengths together, as in _generate
    hyps = [None] * n
    for lo in range(0, n, batch_size):
        rows = order[lo: lo + batch_size]
        src = data.collate(rows).src                       # (b, S) int32, <pad>-padded, ends in <eos>
        for r, ids in zip(rows, side.greedy(src, max_len)):
            hyps[r] = decode(tokenizer, ids)
    scores = metrics.score(kind, hyps, data.targets[:n])
    scores.pop("bleu_signature", None)
    return {"n": n, **scores}


def run():
    from dataclasses import asdict

    import numpy as np
    from _common import header, write_json
    from minitbt import optim
    from minitbt.data import Seq2SeqData, load_tokenizer
    from minitbt.datasets import task_info
    from minitbt.train import config_from_preset

    cfg = config_from_preset(ARGS.preset, task=ARGS.task)
    kind = task_info(cfg.task)["kind"]
    tok = load_tokenizer(cfg.task)

    def split(name):                                       # a split as ids, truncated as in training
        return Seq2SeqData.from_task(cfg.task, name, tok, max_src_len=cfg.max_src_len, max_tgt_len=cfg.max_tgt_len)

    train, valid = split("train"), split("valid")
    # the model minitbt.train builds from this config (TransformerConfig keys)
    mcfg = dict(vocab_size=tok.get_vocab_size(), d_model=cfg.d_model, n_heads=cfg.n_heads, d_ff=cfg.d_ff,
                n_encoder_layers=cfg.n_layers, n_decoder_layers=cfg.n_layers, dropout=cfg.dropout,
                max_len=max(cfg.max_src_len, cfg.max_tgt_len) + 1, seed=cfg.seed)
    side = MinitbtSide(mcfg, cfg) if ARGS.side == "minitbt" else TorchSide(mcfg, cfg, ARGS.own_init)
    extra = f"side {ARGS.side}, preset {ARGS.preset}, {side.n_params:,} parameters"
    if ARGS.side == "torch":
        extra += f"; torch {side.torch.__version__}, {side.torch.get_num_threads()} threads"
    info = header(ARGS, UNSET, extra=extra)
    print(f"# {cfg.task} ({kind}): {len(train)} train / {len(valid)} valid pairs; "
          f"{ARGS.minutes} min or {cfg.max_steps} steps, evaluating every {ARGS.eval_every_minutes} min", flush=True)

    now, limit, every = CLOCKS[ARGS.clock], 60 * ARGS.minutes, 60 * ARGS.eval_every_minutes
    step, epoch, pos, seconds, tokens, losses, curve = 0, 0, 0, 0.0, 0, [], []
    next_eval = every
    epoch_batches = train.batches(cfg.batch_tokens, shuffle=True, seed=cfg.seed + epoch)

    def point():                                           # one curve point (not timed)
        p = {"minutes": round(seconds / 60, 3), "step": step,
             "train_loss": round(float(np.mean(losses)), 4) if losses else None,
             **evaluate(side, valid, ARGS.eval_sentences, tok, kind, cfg.max_tgt_len)}
        losses.clear()
        print(json.dumps(p), flush=True)
        return p

    while step < cfg.max_steps and seconds < limit:
        t0 = now()                                         # timed: batching + the training step
        if pos >= len(epoch_batches):                      # a new epoch: reshuffle, as minitbt.train does
            epoch, pos = epoch + 1, 0
            epoch_batches = train.batches(cfg.batch_tokens, shuffle=True, seed=cfg.seed + epoch)
        batch = train.collate(epoch_batches[pos])          # src (B, S), tgt_in / tgt_out (B, T)
        lr = optim.lr_schedule(step, cfg.lr, cfg.warmup, cfg.max_steps, cfg.decay)
        losses.append(side.step(batch, lr))
        step, pos, tokens = step + 1, pos + 1, tokens + batch.n_tokens
        seconds += now() - t0
        if seconds >= next_eval and step < cfg.max_steps and seconds < limit:   # the end gets its own
            curve.append(point())
            next_eval = (math.floor(seconds / every) + 1) * every
    curve.append(point())
    final = {"valid": {k: v for k, v in curve[-1].items() if k not in ("minutes", "step", "train_loss")}}
    if ARGS.test:
        final["test"] = evaluate(side, split("test"), 10 ** 9, tok, kind, cfg.max_tgt_len)
        print(json.dumps({"test": final["test"]}), flush=True)
    out = {**info, "side": ARGS.side, "preset": ARGS.preset, "task": cfg.task, "kind": kind,
           "config": asdict(cfg), "model_config": mcfg, "parameters": side.n_params,
           "init": "torch" if ARGS.side == "torch" and ARGS.own_init else "minitbt",
           "twin_logit_gap": getattr(side, "parity", None),
           "minutes_limit": ARGS.minutes, "stopped_by": "max_steps" if step >= cfg.max_steps else "minutes",
           "steps": step, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9),
           "steps_per_min": 60 * step / max(seconds, 1e-9), "curve": curve, "final": final}
    print(f"# {ARGS.side}: {step} steps in {seconds / 60:.2f} min ({out['steps_per_min']:.1f} steps/min, "
          f"{out['tokens_per_s']:.0f} tok/s), stopped by {out['stopped_by']}; final "
          + ", ".join(f"{k} {final['valid'][k]}" for k in main_metrics(kind)))
    if ARGS.json:
        write_json(ARGS.json, out)


def compare(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    a, b = runs
    if a.get("stopped_by") != b.get("stopped_by"):         # the schedule runs over max_steps
        print(f"# warning: one run ended its schedule, the other was cut by --minutes "
              f"({a['side']}: {a.get('stopped_by')}, {b['side']}: {b.get('stopped_by')})")
    for key in ("task", "preset", "config", "model_config", "minutes_limit"):
        if a.get(key) != b.get(key):
            print(f"# warning: the runs differ in {key}: {a.get(key)} vs {b.get(key)}")
    keys = main_metrics(a["kind"])
    rows = []
    for r in runs:
        row = {"side": r["side"], "steps": r["steps"],
               "minutes": r["seconds"] / 60, "spm": r["steps_per_min"], "tps": r["tokens_per_s"],
               "ratio": r["steps_per_min"] / a["steps_per_min"], "loss": r["curve"][-1]["train_loss"],
               **{k: r["final"]["valid"].get(k) for k in keys}}
        row.update({f"test_{k}": r["final"].get("test", {}).get(k) for k in keys})
        rows.append(row)
    n = a["final"]["valid"]["n"]
    print(f"# {a['task']} ({a['kind']}), preset {a['preset']}, {a['minutes_limit']} training minutes; "
          f"valid = first {n} pairs, greedy; ratio = steps/min relative to {a['side']}")
    cols = [("side", "side", "{}")] + [(k, f"valid {k}", "{:.2f}") for k in keys]
    if any("test" in r["final"] for r in runs):
        cols += [(f"test_{k}", f"test {k}", "{:.2f}") for k in keys]
    cols += [("loss", "train loss", "{:.3f}"), ("steps", "steps", "{}"), ("minutes", "minutes", "{:.2f}"),
             ("spm", "steps/min", "{:.1f}"), ("tps", "tokens/s", "{:.0f}"), ("ratio", "ratio", "{:.2f}x")]
    print_table(rows, cols)
    print(f"\n# curves ({keys[0]} on the valid subset)")
    curve_rows = [{"side": r["side"], **p} for r in runs for p in r["curve"]]
    print_table(curve_rows, [("side", "side", "{}"), ("minutes", "minutes", "{:.2f}"), ("step", "step", "{}"),
                             ("train_loss", "train loss", "{:.3f}"), (keys[0], keys[0], "{:.2f}")])


if __name__ == "__main__":
    if ARGS.compare:
        compare(ARGS.compare)
    elif ARGS.side is None:
        sys.exit("give --side minitbt|torch (or --compare A.json B.json)")
    else:
        run()
