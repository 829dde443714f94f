"""Learning curves from metrics.jsonl files: metric against training minutes, one line per run.

    python -m minitbt.plot runs/a/metrics.jsonl runs/b/metrics.jsonl --metric bleu --out docs/img/curve.png
"""
import argparse
import json
import os


def read_log(path: str) -> list:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics log at {path}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(paths, metric: str, out: str, labels=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, path in enumerate(paths):
        log = read_log(path)
        label = labels[i] if labels else os.path.basename(os.path.dirname(path))
        minutes = [r["minutes"] for r in log]
        ax1.plot(minutes, [r[metric] for r in log], marker="o", label=label)
        ax2.plot(minutes, [r["valid_loss"] for r in log], marker="o", label=label)
    ax1.set(xlabel="training minutes", ylabel=metric, title=f"validation {metric}")
    ax2.set(xlabel="training minutes", ylabel="loss", title="validation loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--metric", default="bleu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--labels", nargs="*")
    args = ap.parse_args(argv)
    plot_curves(args.logs, args.metric, args.out, args.labels)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
