"""Quantization-aware fine-tuning of a minitbt model on several processes with PyTorch DDP.

    torchrun --nproc_per_node 2 examples/ddp_qat.py --model models/ddtp-en-de-2-2-8.npz \\
        --task data/ddtp-en-de --out runs/ddp-228 --steps 200

What each process (rank) does:

1. loads the model (a minitbt checkpoint .npz, or a ``minitbt export --format safetensors`` file)
   and converts it with ``minitbt.torch.to_torch``: the same architecture, the same quantizers as
   torch autograd functions with the same pseudo-gradients, the trained scales;
2. initialises the learned scales that have never seen data (a model fresh from quantize_model),
   on its own first batch, then wraps the module in DistributedDataParallel, whose constructor
   copies rank 0's parameters and buffers to every rank: all ranks start identical;
3. trains: every epoch's length-bucketed batches are dealt out, batch i to rank i mod world size;
   ``loss.backward()`` all-reduces the gradients (the average over the ranks, the learned scales'
   included), so every rank takes the same AdamW step and the parameters stay identical;
4. rank 0 converts the module back (``from_torch``) and writes ``<out>/model.npz``, a minitbt
   checkpoint, and ``<out>/model.packed.npz``, its packed form for the bit kernels:

    minitbt translate --model runs/ddp-228/model.packed.npz --packed "Free software for scientists"

Several machines (docs/pytorch.md): start the same command on every machine, e.g. two machines
with 8 GPUs each, the first at 10.0.0.1:

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr 10.0.0.1 --master_port 29500 \\
        examples/ddp_qat.py --backend nccl ...          # on 10.0.0.1
    torchrun --nnodes 2 --node_rank 1 --nproc_per_node 8 --master_addr 10.0.0.1 --master_port 29500 \\
        examples/ddp_qat.py --backend nccl ...          # on the other machine

``--digests`` makes every rank write ``<out>/rank<r>.json``: a SHA-256 of each parameter and of each
gradient of the last step, the losses and the batches it saw (the test compares the ranks).
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as tF
from torch.nn.parallel import DistributedDataParallel

from minitbt.data import PAD, Seq2SeqData, load_tokenizer
from minitbt.model_io import tokenizer_from_header
from minitbt.optim import lr_schedule
from minitbt.torch import from_torch, load_minitbt, to_torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a quantized minitbt checkpoint (.npz) or safetensors export")
    p.add_argument("--task", required=True, help="task folder (train split, and tokenizer.json if the model has none)")
    p.add_argument("--out", required=True, help="folder for model.npz and model.packed.npz (rank 0)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (each rank one batch a step)")
    p.add_argument("--batch-tokens", type=int, default=3000, help="token budget of one rank's batch")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (0: none)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--max-src-len", type=int, default=None, help="default: the model's training setting, else 64")
    p.add_argument("--max-tgt-len", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="nccl (GPUs) or gloo (CPUs); default: nccl if CUDA is there")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--digests", action="store_true", help="write <out>/rank<r>.json (parameter checksums)")
    return p.parse_args(argv)


def rank_batches(data: Seq2SeqData, batch_tokens: int, seed: int, rank: int, world: int):
    """This rank's batches, epoch after epoch: batch i of an epoch goes to rank i mod world, and every
    rank gets the same number (DDP needs all ranks to take every step together)."""
    epoch = 0
    while True:
        groups = data.batches(batch_tokens, seed=seed + epoch)
        n = len(groups) // world
        if n == 0:
            raise ValueError(f"an epoch has {len(groups)} batches, fewer than the {world} ranks: lower --batch-tokens")
        for g in groups[rank::world][:n]:
            yield data.collate(g)
        epoch += 1


@torch.no_grad()
def initialise_scales(module, batch) -> int:
    """One forward on ``batch`` if a learned scale has never been initialised; returns how many were."""
    fresh = [m for m in module.modules() if hasattr(m, "initialized") and not bool(m.initialized[0])]
    if fresh:
        was_training = module.training
        module.eval()
        module(batch.src, batch.tgt_in)
        module.train(was_training)
    return len(fresh)


def digest(t) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def main(argv=None):
    args = parse_args(argv)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)                       # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + rank)                    # dropout masks differ by rank, as data does

    minitbt_model, meta = load_minitbt(args.model)
    if getattr(minitbt_model, "quant_recipe", None) is None:
        print(f"[rank {rank}] note: {args.model} is full precision; fine-tuning it without quantizers")
    tokenizer = tokenizer_from_header(meta, args.model) or load_tokenizer(args.task)
    trained = meta.get("train_config", {})
    limit = minitbt_model.config.max_len
    src_len = min(args.max_src_len or trained.get("max_src_len") or 64, limit)
    tgt_len = min(args.max_tgt_len or trained.get("max_tgt_len") or 64, limit)
    data = Seq2SeqData.from_task(args.task, "train", tokenizer, src_len, tgt_len)
    batches = rank_batches(data, args.batch_tokens, args.seed, rank, world)

    module = to_torch(minitbt_model).to(device).train()
    first = next(batches)
    initialise_scales(module, first)
    ddp = DistributedDataParallel(module, device_ids=[local_rank] if device.type == "cuda" else None)

    params = list(ddp.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": args.weight_decay},   # as minitbt's
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]                  # AdamW
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)

    losses, seen, t0, batch = [], [], time.perf_counter(), first
    for step in range(args.steps):
        if step:
            batch = next(batches)
        for g in opt.param_groups:
            g["lr"] = lr_schedule(step, args.lr, args.warmup, args.steps, "linear")
        logits = ddp(batch.src, batch.tgt_in)                                    # (B, T, V)
        labels = torch.as_tensor(batch.tgt_out, device=device).long()
        loss = tF.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=PAD,
                                label_smoothing=args.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()                                    # DDP averages the gradients over the ranks here
        if args.clip:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        grads = {n: digest(p.grad) for n, p in module.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.item())
        seen.append(batch.index.tolist())
        if rank == 0 and (step + 1) % max(1, args.steps // 10) == 0:
            print(f"step {step + 1}/{args.steps}  loss {np.mean(losses[-10:]):.3f}  "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)

    os.makedirs(args.out, exist_ok=True)
    if args.digests:
        record = {"rank": rank, "world": world, "steps": args.steps, "losses": losses, "batches": seen,
                  "params": {n: digest(p) for n, p in module.named_parameters()},
                  "buffers": {n: digest(b) for n, b in module.named_buffers()}, "last_grads": grads}
        with open(os.path.join(args.out, f"rank{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(record, f)
    if rank == 0:
        from minitbt.model_io import save_model
        from minitbt.packed import pack_model, save_packed
        model = from_torch(module.cpu()).eval()
        keep = {k: meta[k] for k in ("task", "train_config") if k in meta}
        save_model(os.path.join(args.out, "model.npz"), model, tokenizer=tokenizer.to_str(), **keep)
        if getattr(model, "quant_recipe", None) is not None:
            save_packed(os.path.join(args.out, "model.packed.npz"), pack_model(model), tokenizer=tokenizer.to_str())
        print(f"wrote {args.out}/model.npz" + (" and model.packed.npz" if getattr(model, "quant_recipe", None) is not None else ""))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
