#!/usr/bin/env bash
# The full-precision teachers of docs/results.md ("Teachers"), one per argument, one BLAS thread each:
#
#     bash docs/teachers.sh ddtp summ          # start (or continue: a run that has last.npz resumes)
#     bash docs/teachers.sh summ-copy          # the summarizer with a copy (pointer-generator) output
#     bash docs/teachers.sh summ-transfer      # the summarizer started from the translation teacher
#     RUNS=/elsewhere bash docs/teachers.sh ddtp      # run folders somewhere else than runs/
#
# A run writes runs/<name>/ (last.npz, best.npz, metrics.jsonl, metrics.csv) and runs/<name>.log.
# Cut off (the end of a working day, a reboot), it continues exactly where its last checkpoint
# was with `--resume`, which takes every setting from runs/<name>/last.npz. When it ends, score it:
#
#     minitbt --threads 1 eval --model runs/ddtp-fp192/best.npz --task data/ddtp-en-de --split test
#     minitbt --threads 1 eval --model runs/summ-transfer192/best.npz --task data/debian-summ --split test
#
# (summ and summ-copy were trained and scored when debian-summ had a tokenizer of its own: `git show
# f8580f5:data/debian-summ/tokenizer.json`. Run again now, they use the shared one.)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-runs}"

# d_model 192 (4 heads of 48), d_ff 768, 3 + 3 layers, post-LN, tied 8k BPE embedding: 4.6 M parameters,
# about 9.5 MB as a float16 file. Translation: sources and targets to 96 tokens, 3,000-token batches.
DDTP="--preset small --task data/ddtp-en-de --out $RUNS/ddtp-fp192 --d-model 192 --d-ff 768 --lr 1.5e-3 \
      --warmup 400 --max-steps 4000 --eval-every 250"
# Summarization: sources to 96 tokens (the synopsis sits at the start), targets to 32, 4,000-token batches.
SUMM="--preset small --task data/debian-summ --d-model 192 --d-ff 768 --max-src-len 96 \
      --max-tgt-len 32 --batch-tokens 4000 --lr 1.5e-3 --warmup 300 --max-steps 5000"
# summ-copy: the same with a pointer-generator output (--copy 1, See et al. 2017), 4,000 steps to stay
# within 3 hours of training time beside other runs (--max-minutes 180 stops it there): it can copy the
# source's rare names, which summ-fp192 misspells (docs/results.md)

# summ-transfer: the translation teacher (models/ddtp-en-de-fp.npz: its encoder has read the English of
# Debian descriptions) starts the summarizer, with a fresh copy gate; debian-summ shares ddtp-en-de's
# tokenizer for this (data/prepare.py). Fine-tuning rate 7e-4, 100 warm-up steps.
TRANSFER="--preset small --task data/debian-summ --init models/ddtp-en-de-fp.npz --copy 1 --max-src-len 96 \
          --max-tgt-len 32 --batch-tokens 4000 --lr 7e-4 --warmup 100 --max-steps 4000 --eval-every 500 \
          --max-minutes 180"

for name in "$@"; do
    case "$name" in
        ddtp) args="$DDTP"; out="$RUNS/ddtp-fp192" ;;
        summ) out="$RUNS/summ-fp192"; args="$SUMM --out $out --eval-every 250" ;;
        summ-copy) out="$RUNS/summ-copy192"
                   args="${SUMM/--max-steps 5000/--max-steps 4000} --out $out --eval-every 500 --copy 1 --max-minutes 180" ;;
        summ-transfer) out="$RUNS/summ-transfer192"; args="$TRANSFER --out $out" ;;
        *) echo "unknown teacher $name (ddtp, summ, summ-copy, summ-transfer)" >&2; exit 2 ;;
    esac
    if [ -f "$out/last.npz" ]; then
        nohup minitbt --threads 1 train --resume --out "$out" >> "$out.log" 2>&1 &
    else
        mkdir -p "$RUNS"
        # shellcheck disable=SC2086
        nohup minitbt --threads 1 train $args > "$out.log" 2>&1 &
    fi
    echo "$name: pid $!, log $out.log"
done
