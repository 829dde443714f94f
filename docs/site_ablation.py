"""Which quantizer sites cost a low-bit student most (docs/results.md, "What bounds the low-bit rows").

    python docs/site_ablation.py 2-2-2 --teacher models/ddtp-en-de-fp.npz       # step 0: one family alone
    python docs/site_ablation.py runs/table/ddtp-2-2-2/best.npz --teacher models/ddtp-en-de-fp.npz

A site is one quantizer of the model (larq's convention: ``None`` is full precision); a family is a kind
of site (the embedding's weights, the attention or FFN weights, the inputs of those linears, the
attention's Q, K, V and its probabilities). Two views, with nothing retrained:
* a recipe (2-2-2): the model a row starts from (the teacher, quantized as train.py quantizes it), with
  one family quantized alone and the rest at full precision. "Share of the gap" is how much of the
  loss between the all-quantized model and the teacher that family opens on its own.
* a trained student: one family at a time put back to full precision (its latent weights or its
  unquantized activations), the rest as trained. A student adapts to its quantizers, so putting one
  back can raise the loss: the latent weights are not an FP model.
Each line: the validation loss (cross-entropy without smoothing, the whole valid split, as train.py
reports it) and greedy BLEU (ROUGE-L for summarization) on --sentences sentences spread over the
split. The families interact, so their shares need not add up to 1. One BLAS thread.
"""
import argparse
import os
from dataclasses import replace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from minitbt.config import config_from_preset  # noqa: E402
from minitbt.data import Seq2SeqData, load_tokenizer  # noqa: E402
from minitbt.datasets import task_info  # noqa: E402
from minitbt.model_io import load_model  # noqa: E402
from minitbt.quant import quantizers  # noqa: E402
from minitbt.train import _initial_model, validate  # noqa: E402

# family -> does a quantizer at this module path belong to it
FAMILIES = {
    "embedding weights": lambda n: n.startswith("embed."),
    "attention weights": lambda n: "_attn." in n and n.endswith("proj.weight_quantizer"),
    "FFN weights": lambda n: ".ffn." in n and n.endswith("weight_quantizer"),
    "attention linear inputs": lambda n: "_attn." in n and n.endswith("proj.input_quantizer"),
    "FFN linear inputs": lambda n: ".ffn." in n and n.endswith("input_quantizer"),
    "attention Q, K, V": lambda n: n.rsplit(".", 1)[-1] in ("q_quant", "k_quant", "v_quant"),
    "attention probabilities": lambda n: n.endswith("p_quant"),
}


def sites(model):
    """{path: (owner module, attribute, quantizer)} of every quantizer in the model."""
    owners = dict(model.named_modules())
    return {name: (owners[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], q) for name, q in quantizers(model)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("student", help="a quantized checkpoint (families put back to FP), or a recipe such as "
                                   "2-2-2 (the teacher quantized as a student starts, one family at a time)")
    p.add_argument("--teacher", required=True, help="the full-precision teacher")
    p.add_argument("--task", default="data/ddtp-en-de")
    p.add_argument("--sentences", type=int, default=200, help="greedy-decoded valid sentences for the metric")
    args = p.parse_args()
    tok, kind = load_tokenizer(args.task), task_info(args.task)["kind"]
    cfg = config_from_preset("small", task=args.task)
    data = Seq2SeqData.from_task(args.task, "valid", tok, cfg.max_src_len, cfg.max_tgt_len)
    trained = os.path.exists(args.student)
    if trained:
        model, _ = load_model(args.student)
    else:                                          # step 0 of a row: the teacher, quantized (train.py)
        model = _initial_model(replace(cfg, init=args.teacher, quant=args.student), tok)
    where = sites(model)
    unclaimed = [n for n in where if not any(f(n) for f in FAMILIES.values())]
    if unclaimed:
        raise SystemExit(f"quantizer sites in no family: {unclaimed}")

    def score(active):
        """valid loss and metric with the quantizers at the paths in `active` on, the others None."""
        for n, (owner, attr, q) in where.items():
            setattr(owner, attr, q if n in active else None)
        r = validate(model, data, tok, kind, cfg, args.sentences)
        return r["valid_loss"], r.get("bleu", r.get("rougeL"))

    everything = set(where)
    rows = [("all quantized" + (" (as trained)" if trained else " (step 0)"), len(where), *score(everything))]
    for fam, f in FAMILIES.items():
        names = {n for n in where if f(n)}
        if names:     # trained: this family back to FP, the rest on; step 0: this family alone on
            rows.append((fam, len(names), *score(everything - names if trained else names)))
    if trained:                                    # at step 0, none quantized is the teacher itself
        rows.append(("none (the latent weights)", 0, *score(set())))
    teacher, _ = load_model(args.teacher)
    r = validate(teacher, data, tok, kind, cfg, args.sentences)
    teacher_row = ("teacher", 0, r["valid_loss"], r.get("bleu", r.get("rougeL")))
    rows.append(teacher_row)

    metric = "BLEU" if kind == "translation" else "ROUGE-L"
    gap = rows[0][2] - teacher_row[2]
    head = "share of the gap closed by putting it back" if trained else "share of the gap it opens alone"
    print(f"# {args.student} ({'trained' if trained else 'step 0'}) against {args.teacher}: valid loss on "
          f"{len(data)} pairs, {metric} on {min(args.sentences, len(data))} of them (greedy)")
    print(f"| {'family put back to FP' if trained else 'family quantized'} | sites | valid loss | {head} | {metric} |")
    print("|---|---|---|---|---|")
    for i, (name, count, loss, value) in enumerate(rows):
        share = ""
        if name in FAMILIES and gap > 0:
            share = f"{(rows[0][2] - loss) / gap:.2f}" if trained else f"{(loss - teacher_row[2]) / gap:.2f}"
        print(f"| {name} | {count or ''} | {loss:.4f} | {share} | {value:.2f} |")


if __name__ == "__main__":
    main()
