"""How the four terms of the distillation loss pull on a quantized student (docs/results.md,
"The quantization pilot"):

    python docs/kd_terms.py runs/pilot/lc+lrhi-2-2-2/best.npz --teacher runs/ddtp-fp192/best.npz
    python docs/kd_terms.py 2-2-2 --teacher runs/ddtp-fp192/best.npz      # at step 0: the teacher, quantized

For each term of L = CE + soft CE + hidden MSE + attention MSE (minitbt.distill, weights 1) on a few
training batches of 3,000 target tokens: its value, the norm of its gradient over the student's
trainable parameters, and the cosine between that gradient and the gradient of CE + soft CE (the two
terms about the output, which BLEU scores). A term whose gradient is large and points away from the
output terms' takes the step somewhere else: with the global clip at 1.0 it also shrinks the rest.
One BLAS thread; dropout off (eval mode), so that every forward is the same and the differences
between the four losses are exactly the terms.
"""
import argparse
import os
from types import SimpleNamespace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from minitbt import distill  # noqa: E402
from minitbt.data import Seq2SeqData, load_tokenizer  # noqa: E402
from minitbt.model_io import load_model  # noqa: E402
from minitbt.train import _initial_model, config_from_preset  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("student", help="a quantized checkpoint, or a recipe (2-2-2, 1-1-1): the teacher quantized")
    p.add_argument("--teacher", required=True)
    p.add_argument("--task", default="data/ddtp-en-de")
    p.add_argument("--batches", type=int, default=3)
    args = p.parse_args()
    tok = load_tokenizer(args.task)
    cfg = config_from_preset("small", task=args.task)
    if os.path.exists(args.student):
        student, _ = load_model(args.student)
    else:
        cfg = config_from_preset("small", task=args.task, init=args.teacher, teacher=args.teacher, quant=args.student)
        student = _initial_model(cfg, tok)
    student.eval()
    teacher, _ = load_model(args.teacher)
    teacher.eval()
    data = Seq2SeqData.from_task(args.task, "train", tok, cfg.max_src_len, cfg.max_tgt_len)
    order = data.batches(3000, seed=1)
    params = [q for q in student.parameters() if q.requires_grad]

    def loss_and_grad(batch, w_kd, w_hid, w_att):
        c = SimpleNamespace(kd_logits=w_kd, kd_hidden=w_hid, kd_attn=w_att, kd_temperature=1.0,
                            label_smoothing=cfg.label_smoothing)
        for q in params:
            q.grad = None
        loss = distill.distillation_loss(student, teacher, batch, c)
        loss.backward()
        return float(loss.data), np.concatenate([(q.grad if q.grad is not None else np.zeros_like(q.data)).ravel()
                                                 for q in params]).astype(np.float64)

    print(f"# {args.student}: {args.batches} batches of {args.task}, 3,000 target tokens each")
    print(f"{'batch':>5}  {'term':<16} {'value':>7} {'|grad|':>7} {'cos(grad, grad CE+KD)':>22}")
    for i in range(args.batches):
        batch = data.collate(order[i])
        ce = loss_and_grad(batch, 0, 0, 0)
        out = loss_and_grad(batch, 1, 0, 0)                       # CE + soft CE
        hid = loss_and_grad(batch, 1, 1, 0)
        att = loss_and_grad(batch, 1, 0, 1)
        terms = {"CE": ce, "soft CE": (out[0] - ce[0], out[1] - ce[1]), "hidden MSE": (hid[0] - out[0], hid[1] - out[1]),
                 "attention MSE": (att[0] - out[0], att[1] - out[1])}
        g_out = out[1] / np.linalg.norm(out[1])
        for name, (value, g) in terms.items():
            print(f"{i:>5}  {name:<16} {value:>7.3f} {np.linalg.norm(g):>7.3f} {g @ g_out / np.linalg.norm(g):>22.3f}")


if __name__ == "__main__":
    main()
