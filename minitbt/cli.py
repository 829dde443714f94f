"""The ``minitbt`` command.

    minitbt prepare   DIR --out data/mytask --kind translation   a user's parallel text -> a task folder
    minitbt train     --preset tiny --task data/ddtp-en-de --out runs/tiny [--resume] [--quant 2-2-8 --teacher CKPT]
    minitbt eval      --model CKPT --task data/ddtp-en-de --split test [--beam 4] [--packed] [--split-sentences]
    minitbt translate --model CKPT "An English sentence."         (reads standard input without text)
    minitbt summarize --model CKPT "A long description ..."
    minitbt seqkd     --teacher CKPT --task data/ddtp-en-de --out data/ddtp-en-de-seqkd   (Kim & Rush 2016)
    minitbt baseline  --task data/debian-summ --words 10           the lead-N baseline a model must beat
    minitbt summary   --model CKPT                                 parameters, memory and MACs by bit width
    minitbt export    --model CKPT --out model.npz [--half] [--packed] [--format safetensors]

``--threads N`` sets the BLAS thread count. Errors in the input (a missing
file, an unknown task, an empty text, a corrupt checkpoint, a bad option value, an output path
that cannot be written) end with a one-line message and exit 2; Ctrl-C ends with one line and
exit 130 (``train`` first ends its step and writes last.npz; ``kill`` does the same, exit 143).
docs/training.md lists what is checked.
"""
import argparse
import os
import sys
from dataclasses import fields

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the shipped models live in the repo
MODELS = {"translation": os.path.join(_REPO, "models", "ddtp-en-de-fp.npz"),
          "summarization": os.path.join(_REPO, "models", "debian-summ-fp.npz")}


def _set_threads(n: int) -> None:
    """--threads N: set the BLAS and OpenMP thread pools to N. ``import minitbt`` has already
    loaded NumPy (and started its BLAS threads), so the environment variables only reach child
    processes; threadpoolctl resizes the live pools."""
    from threadpoolctl import threadpool_limits
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    threadpool_limits(n)


def _train_parser(sub):
    from minitbt.config import TrainConfig
    p = sub.add_parser("train", help="train a model (full precision, or quantization-aware with --quant)")
    p.add_argument("--preset", default=None, help="tiny (the default), small or test (flags below override it)")
    p.add_argument("--resume", action="store_true", help="continue <out>/last.npz exactly, with its settings")
    p.add_argument("--allow-change", default="", metavar="NAME[,NAME]",
                   help="with --resume: settings that may differ from the checkpoint's (e.g. max_steps)")
    for f in fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=None)
    return p


def _build_parser():
    ap = argparse.ArgumentParser(prog="minitbt", description="ternary and binary transformers in NumPy")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: the BLAS's own)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="turn train/valid/test.{source,target} files into a task folder")
    p.add_argument("src_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--kind", choices=["translation", "summarization"], default="translation")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--tokenizer", default=None, metavar="TASK",
                   help="reuse this task folder's tokenizer.json instead of training one, so that a model "
                        "trained on TASK can start this task (--init)")
    p.add_argument("--force", action="store_true", help="replace an existing task folder at --out")

    _train_parser(sub)

    for name in ("translate", "summarize"):
        p = sub.add_parser(name, help=f"{name} text with a checkpoint")
        p.add_argument("text", nargs="?", help="the text (default: one text per line of standard input)")
        _decoding_args(p, default_model=MODELS["translation" if name == "translate" else "summarization"])

    p = sub.add_parser("eval", help="BLEU/chrF or ROUGE of a checkpoint on a split")
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--hyp-out", default=None, help="write hypotheses here (default: next to the model)")
    _decoding_args(p, default_model=None)

    p = sub.add_parser("seqkd", help="sequence-level distillation data: a task whose train targets are a teacher's outputs")
    p.add_argument("--teacher", required=True, help="the FP checkpoint whose outputs become the targets")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True, help="the new task folder")
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    p.add_argument("--force", action="store_true", help="replace an existing task folder at --out")

    p = sub.add_parser("baseline", help="the trivial baseline's scores: the first N words of each source")
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--words", type=int, default=10, help="first N words of the source (0: the whole source)")

    p = sub.add_parser("summary", help="per-layer table of parameters, memory and MACs by bit width")
    p.add_argument("--model", required=True)

    p = sub.add_parser("export", help="save weights only (float16 with --half, or the packed form)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--half", action="store_true")
    p.add_argument("--packed", action="store_true")
    p.add_argument("--format", choices=["npz", "safetensors"], default="npz",
                   help="npz: a minitbt checkpoint; safetensors: weights and learned scales, with config, "
                        "recipe and tokenizer in its metadata (for PyTorch: docs/pytorch.md)")
    p.add_argument("--task", default=None, help="embed this task's tokenizer if the checkpoint has none")
    return ap


def _decoding_args(p, default_model):
    p.add_argument("--model", default=default_model, required=default_model is None)
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--min-len", type=int, default=0)
    p.add_argument("--max-len", type=int, default=None,
                   help="longest output in tokens (default: the model's training target length, else 64)")
    p.add_argument("--packed", action="store_true",
                   help="run the packed (bit-kernel) model on the compiled decoder where it was built (a float "
                        "model runs there as float)")
    p.add_argument("--numpy", action="store_true", help="with --packed: the NumPy packed model (the reference)")
    p.add_argument("--split-sentences", action="store_true",
                   help="decode each sentence of a text on its own and join the outputs (for paragraphs)")
    p.add_argument("--tokenizer", default=None, help="task folder with tokenizer.json (default: from the model)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = _build_parser()
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        _set_threads(args.threads)
    from minitbt.malloc import keep_freed_memory
    keep_freed_memory()              # reuse freed arrays instead of faulting in fresh pages (malloc.py)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"minitbt {args.command}: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        msg = str(exc.args[0] if exc.args else exc).strip().replace("\n", "; ")
        print(f"minitbt {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:           # a full disk, a file that vanished, a permission denied
        where = f": {exc.filename}" if exc.filename else ""
        print(f"minitbt {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


def _run(args):
    from minitbt import commands
    return getattr(commands, args.command)(args)


if __name__ == "__main__":
    sys.exit(main())
