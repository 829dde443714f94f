#!/usr/bin/env bash
# The first quantized rows of docs/results.md ("Quantized models: the first table", distilled from
# the d_model 128 FP models), one row per argument. docs/tbt_table.sh makes the current table.
#
#     git show 3d52d7c:models/ddtp-en-de-fp.npz > /tmp/ddtp-d128.npz       # the d_model 128 FP models,
#     git show 3d52d7c:models/debian-summ-fp.npz > /tmp/summ-d128.npz      # replaced in models/ since
#     DDTP_FP=/tmp/ddtp-d128.npz SUMM_FP=/tmp/summ-d128.npz bash docs/tbt_table_d128.sh ddtp-2-2-8
#     bash docs/tbt_table_d128.sh list                                      # the row names
#
# Every row starts from the FP model (--init) and distils from it (--teacher), one BLAS thread, with
# the recipe options of the time (the paper's scale gradient, one global clip: OLD below). Two rows
# were run side by side (two processes, one thread each).
# A row writes runs/<row>/ (checkpoints, metrics.jsonl, test.json, test.hyp) and runs/<row>.train.log.
set -euo pipefail
cd "$(dirname "$0")/.."

DDTP_FP=${DDTP_FP:-models/ddtp-en-de-fp.npz}
SUMM_FP=${SUMM_FP:-models/debian-summ-fp.npz}
OLD="--clip-scales global --kd-hidden 1 --kd-attn 1"   # and lsq_grad_scale=0 (with --quant, in row() below)
DDTP="--preset small --task data/ddtp-en-de --teacher $DDTP_FP --init $DDTP_FP $OLD"
SUMM="--preset small --task data/debian-summ --teacher $SUMM_FP --init $SUMM_FP $OLD \
      --max-src-len 128 --max-tgt-len 32 --batch-tokens 4000"
# A8 rows learn at 2.5e-4, A2/A1 rows at 5e-4 (their activation scales have further to move);
# warm-up 5% of the schedule; --max-minutes caps the training time (validation excluded).
LONG="--max-steps 1000 --warmup 50 --max-minutes 28 --eval-every 250"      # the shipped 2-2-8 and 1-1-1, and BWN
SHORT="--max-steps 550 --warmup 28 --max-minutes 22 --eval-every 275"      # 1-1-8, and 1-1-1 from it
ABL="--max-steps 420 --warmup 21 --max-minutes 16 --eval-every 210"        # the four 2-2-2 rows (ablation)
SUMMB="--max-steps 220 --warmup 11 --max-minutes 9 --eval-every 110"      # summarization

row() {
    case "$1" in
        ddtp-2-2-8)            echo "$DDTP --quant 2-2-8 --lr 2.5e-4 $LONG" ;;
        ddtp-1-1-1)            echo "$DDTP --quant 1-1-1 --lr 5e-4 $LONG" ;;
        ddtp-bwn-1-1-1)        echo "$DDTP --quant bwn-1-1-1 --lr 5e-4 $LONG" ;;
        ddtp-1-1-8)            echo "$DDTP --quant 1-1-8 --lr 2.5e-4 $SHORT" ;;
        # multi-step distillation (BiT): 1-1-1 from the 1-1-8 student, which is also its teacher
        ddtp-1-1-1-from-1-1-8) echo "--preset small --task data/ddtp-en-de --teacher runs/ddtp-1-1-8/best.npz --init runs/ddtp-1-1-8/best.npz $OLD --quant 1-1-1 --lr 5e-4 $SHORT" ;;
        ddtp-2-2-2)            echo "$DDTP --quant 2-2-2 --lr 5e-4 $ABL" ;;
        ddtp-twn-2-2-2)        echo "$DDTP --quant twn-2-2-2 --lr 5e-4 $ABL" ;;
        ddtp-twn+elastic-2-2-2) echo "$DDTP --quant twn+elastic-2-2-2 --lr 5e-4 $ABL" ;;
        ddtp-stats-2-2-2)      echo "$DDTP --quant stats-2-2-2 --lr 5e-4 $ABL" ;;
        summ-2-2-8)            echo "$SUMM --quant 2-2-8 --lr 2.5e-4 $SUMMB" ;;
        summ-1-1-8)            echo "$SUMM --quant 1-1-8 --lr 2.5e-4 $SUMMB" ;;
        summ-2-2-2)            echo "$SUMM --quant 2-2-2 --lr 5e-4 $SUMMB" ;;
        summ-1-1-1)            echo "$SUMM --quant 1-1-1 --lr 5e-4 $SUMMB" ;;
        *) return 1 ;;
    esac
}

ROWS="ddtp-fp summ-fp ddtp-2-2-8 ddtp-1-1-1 ddtp-bwn-1-1-1 ddtp-1-1-8 ddtp-1-1-1-from-1-1-8 ddtp-2-2-2 ddtp-twn-2-2-2 ddtp-twn+elastic-2-2-2
      ddtp-stats-2-2-2 summ-2-2-8 summ-1-1-8 summ-2-2-2 summ-1-1-1"
if [ "${1:-list}" = list ]; then echo $ROWS; exit 0; fi

for name in "$@"; do
    case "$name" in            # the FP rows: the shipped models, scored by the same eval command
        ddtp-fp|summ-fp)
            task=data/ddtp-en-de; model=$DDTP_FP
            if [ "$name" = summ-fp ]; then task=data/debian-summ; model=$SUMM_FP; fi
            mkdir -p "runs/$name"
            minitbt --threads 1 eval --model "$model" --task "$task" --split test \
                --hyp-out "runs/$name/test.hyp" | tee "runs/$name/test.json"
            continue ;;
    esac
    args=$(row "$name") || { echo "unknown row $name; rows: $ROWS" >&2; exit 2; }
    args="$args --quant-options lsq_grad_scale=0"
    if [ "$name" = ddtp-1-1-1-from-1-1-8 ] && [ ! -f runs/ddtp-1-1-8/best.npz ]; then
        echo "row $name starts from runs/ddtp-1-1-8/best.npz: run the row ddtp-1-1-8 first" >&2; exit 2
    fi
    task=$(echo "$args" | sed 's/.*--task \([^ ]*\).*/\1/')
    mkdir -p runs
    echo "== $name: minitbt --threads 1 train $args --out runs/$name"
    # shellcheck disable=SC2086
    minitbt --threads 1 train $args --out "runs/$name" > "runs/$name.train.log" 2>&1
    minitbt --threads 1 eval --model "runs/$name/best.npz" --task "$task" --split test \
        --hyp-out "runs/$name/test.hyp" | tee "runs/$name/test.json"
done
