"""examples/ddp_qat.py: two processes (torchrun, gloo on 127.0.0.1) fine-tune a quantized model;
the ranks end with identical parameters, and the exported result loads, packs and decodes."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from minitbt.cli import main  # noqa: E402
from minitbt.data import Seq2SeqData  # noqa: E402
from minitbt.datasets import prepare_user_task  # noqa: E402
from minitbt.decode import greedy  # noqa: E402
from minitbt.model_io import build_model, load_model, quantize, save_model  # noqa: E402
from minitbt.packed import load_packed, pack_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "the a red blue green small big cat dog bird tree house runs sleeps sings".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A small copy-like translation task (source words -> the same words reversed)."""
    root = tmp_path_factory.mktemp("ddp_task")
    rng = np.random.default_rng(0)
    src = [" ".join(rng.choice(WORDS, rng.integers(2, 7))) for _ in range(200)]
    (root / "raw").mkdir()
    (root / "raw" / "train.source").write_text("\n".join(src) + "\n")
    (root / "raw" / "train.target").write_text("\n".join(" ".join(reversed(s.split())) for s in src) + "\n")
    out = str(root / "rev")
    prepare_user_task(str(root / "raw"), out, kind="translation", vocab_size=60)
    return out


def test_ddp_two_ranks_all_reduce_and_export_packs(task, tmp_path):
    """A fresh TBT 2-2-2 model (learned scales not yet initialised) exported as safetensors, four
    DDP steps on two CPU processes. Each rank sees other batches, yet parameters, buffers and the
    last step's gradients are bit-identical on both: the gradients were all-reduced."""
    model = quantize(build_model(vocab_size=60, d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                                 n_decoder_layers=1, max_len=25, dropout=0.1), "2-2-2")
    ckpt, st = str(tmp_path / "q.npz"), str(tmp_path / "q.safetensors")
    save_model(ckpt, model)
    assert main(["export", "--model", ckpt, "--out", st, "--format", "safetensors", "--task", task]) == 0

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           os.path.join(ROOT, "examples", "ddp_qat.py"), "--model", st, "--task", task, "--out", str(out),
           "--steps", "4", "--batch-tokens", "200", "--lr", "3e-3", "--warmup", "1", "--backend", "gloo",
           "--threads", "1", "--digests"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"torchrun, 2 processes, 4 steps: {seconds:.1f} s")
    assert seconds < 60, f"the DDP run took {seconds:.0f} s"

    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["batches"] != r1["batches"]                                   # different data on each rank
    assert r0["params"] == r1["params"]                                     # yet identical parameters,
    assert r0["buffers"] == r1["buffers"]                                   # buffers (initialized flags)
    assert r0["last_grads"] == r1["last_grads"]                             # and all-reduced gradients
    assert any(n.endswith("input_quantizer.scale") for n in r0["last_grads"])   # the scales are trained too

    start = model.state_dict()
    trained, meta = load_model(str(out / "model.npz"))
    assert meta["tokenizer"] and meta["quant"]["name"] == "tbt-2-2-2"
    after = trained.state_dict()
    assert not np.array_equal(start["encoder.0.ffn.fc1.weight"], after["encoder.0.ffn.fc1.weight"])
    assert all(after[n].all() for n in after if n.endswith("initialized"))
    packed = pack_model(trained)
    src = Seq2SeqData.from_task(task, "valid").collate(np.arange(4)).src
    hyps = greedy(packed, src, 12)
    assert len(hyps) == 4
    assert greedy(load_packed(str(out / "model.packed.npz"))[0], src, 12) == hyps
