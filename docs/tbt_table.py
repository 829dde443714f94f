"""Print the quantized tables of docs/results.md from the runs that docs/tbt_table.sh wrote.

    python docs/tbt_table.py runs/table       # reads runs/table/<row>/test.json and .../metrics.jsonl
    python docs/tbt_table.py docs/runs/qat    # the copies committed with docs/results.md (<row>.test.json, ...)
    python docs/tbt_table.py                  # runs/<row>/: the first table (docs/tbt_table_d128.sh)

For each row: the test-split metric (with the decoding of the FP row's test.json), its ratio to
the FP row of the same task, issue 9's target for that ratio (BLEU for translation, ROUGE-1 for
summarization; the four TBT presets only), the QAT steps and training minutes (validation excluded) from the
run's last metrics line, and the validation loss of the checkpoint that was scored (best.npz:
the validation line with the highest BLEU or ROUGE-L, at the step given in brackets).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "runs")


def _path(row, name):
    """runs/<row>/<name>, or <dir>/<row>.<name> in a folder of copies."""
    inside = os.path.join(RUNS, row, name)
    return inside if os.path.isdir(os.path.join(RUNS, row)) else os.path.join(RUNS, f"{row}.{name}")

TABLES = {
    "ddtp-en-de (translation), test split": (
        ["bleu", "chrf"],
        [("FP (shipped)", "ddtp-fp"), ("TBT 2-2-8", "ddtp-2-2-8"), ("TBT 1-1-8", "ddtp-1-1-8"),
         ("TBT 2-2-2", "ddtp-2-2-2"), ("TBT 1-1-1", "ddtp-1-1-1"),
         ("TBT 1-1-8, the first run (2,509 steps)", "ddtp-1-1-8-2800"),
         ("TBT 2-2-2, the first run (2,800 steps)", "ddtp-2-2-2-2800"),
         ("TBT 2-2-2, multi-step from 2-2-8", "ddtp-multistep-2-2-2"),
         ("TWN baseline 2-2-2", "ddtp-twn-2-2-2"), ("BWN baseline 1-1-1", "ddtp-bwn-1-1-1")]),
    "Ablation at 2-2-2 (ddtp-en-de, test split)": (
        ["bleu", "chrf"],
        [("TWN weights + min-max activations (baseline)", "ddtp-twn-2-2-2"),
         ("+ learned (elastic) activations", "ddtp-twn+elastic-2-2-2"),
         ("+ statistics-based weights", "ddtp-stats-2-2-2"),
         ("+ both (TBT, the same 2,800 steps)", "ddtp-2-2-2-2800")]),
    "debian-summ (summarization), test split": (
        ["rouge1", "rouge2", "rougeL"],
        [("FP (shipped)", "summ-fp"), ("TBT 2-2-8", "summ-2-2-8"), ("TBT 1-1-8", "summ-1-1-8"),
         ("TBT 2-2-2", "summ-2-2-2"), ("TBT 1-1-1", "summ-1-1-1")]),
}


# issue 9's targets: the ratio to FP on the test split of BLEU (translation) and ROUGE-1 (summarization)
TARGETS = {"2-2-8": (0.95, 0.97), "1-1-8": (0.92, 0.95), "2-2-2": (0.82, 0.91), "1-1-1": (0.66, 0.79)}


def _target(row, scores, fp):
    """'>= 0.82: met' for a preset row of the TBT recipe (multi-step too); '' for FP, the baselines
    and the ablation."""
    task, _, preset = row.partition("-")
    preset = preset.removeprefix("multistep-")
    if preset not in TARGETS or not (scores and fp):
        return ""
    key, need = ("bleu", TARGETS[preset][0]) if task == "ddtp" else ("rouge1", TARGETS[preset][1])
    return f"≥ {need:.2f}: {'met' if scores[key] / fp[key] >= need else 'missed'}"


def _read(row, key):
    test, log = _path(row, "test.json"), _path(row, "metrics.jsonl")
    scores = None
    if os.path.exists(test):
        with open(test) as f:
            scores = json.loads(f.read().strip().splitlines()[-1])
    if not os.path.exists(log):
        return scores, None
    with open(log) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if scores is None:                                          # still training: its last validation
        return None, {"last_step": lines[-1]["step"]} if lines else None
    best = max(lines, key=lambda r: r[key])                  # first line with the top score
    return scores, {**best, "last_step": lines[-1]["step"], "minutes": lines[-1]["minutes"]}


def main(argv=None):
    global RUNS
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        RUNS = os.path.abspath(argv[0])
    for title, (keys, rows) in TABLES.items():
        key = "bleu" if "bleu" in keys else "rougeL"              # what best.npz was chosen by
        fp, _ = _read(rows[0][1].split("-")[0] + "-fp", key)      # ddtp-fp or summ-fp
        decoding = ""
        if fp:
            decoding = "greedy" if fp.get("beam", 1) == 1 else f"beam {fp['beam']}"
            decoding += ", sentence by sentence" if fp.get("split_sentences") else ""
            decoding = f" ({decoding})"
        print(f"\n**{title}{decoding}**\n")
        print("| model | " + " | ".join(f"{k} (ratio to FP)" for k in keys) + " | target | QAT steps (best at) | minutes | valid loss |")
        print("|---" * (len(keys) + 5) + "|")
        for label, row in rows:
            scores, last = _read(row, key)
            if scores is None:             # not run, or a log without a score (training, or cut off)
                state = f"unscored ({last['last_step']} steps)" if last else "not run"
                print(f"| {label} | " + " | ".join(state for _ in keys) + " | | | | |")
                continue
            cells = []
            for k in keys:
                ratio = f" ({scores[k] / fp[k]:.2f})" if fp and fp.get(k) else ""
                cells.append(f"{scores[k]:.2f}{ratio}")
            steps = f"{last['last_step']} ({last['step']})" if last else "-"
            minutes = f"{last['minutes']:.1f}" if last else "-"
            vloss = f"{last['valid_loss']:.3f}" if last and "valid_loss" in last else "-"
            print(f"| {label} | " + " | ".join(cells) + f" | {_target(row, scores, fp)} | {steps} | {minutes} | {vloss} |")


if __name__ == "__main__":
    sys.exit(main())
