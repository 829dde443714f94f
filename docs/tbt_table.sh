#!/usr/bin/env bash
# The quantized table of docs/results.md (TBT's Tables 1 to 3), with the default recipe (the pilot's
# winner, docs/quantization.md) and the d_model 192 teachers; one row per argument:
#
#     bash docs/tbt_table.sh ddtp-fp ddtp-2-2-8       # score the FP row, then train and score a row
#     bash docs/tbt_table.sh list                      # the row names
#     bash docs/tbt_table.sh curves                    # redraw the all-rows figures from docs/runs/table
#     DRY=1 bash docs/tbt_table.sh ddtp-2-2-2          # print a row's command without running it
#     python docs/tbt_table.py runs/table              # the tables, from runs/table/<row>/
#
# Every row starts from its task's FP teacher (--init) and distils from it (--teacher), one BLAS
# thread, two rows side by side at most. A row trains for MINUTES (180: the 3 hours a row may take,
# validation excluded) or STEPS steps; its learning rate decays linearly to 0 at STEPS, set to about
# what a row reaches in MINUTES beside one other run. A row that was cut off (its last.npz is there and
# it has no test.json) continues with --resume when it is named again; so does a finished row whose
# step count was raised here (see the summarization rows). The test score is of best.npz
# (the best validation metric on 500 sentences spread over the split), on the packed model, with the
# FP rows' decoding: beam 4, and for translation one sentence at a time (--split-sentences).
# When a row is scored, its metrics log and test scores are copied to docs/runs/table/<row>.* and its
# learning curve is drawn to docs/img/table/<row>.png (commit those: runs/ may not survive).
set -euo pipefail
cd "$(dirname "$0")/.."

DDTP_FP=${DDTP_FP:-models/ddtp-en-de-fp.npz}
SUMM_FP=${SUMM_FP:-models/debian-summ-fp.npz}
OUT=${OUT:-runs/table}
MINUTES=${MINUTES:-180}
DDTP_STEPS=${DDTP_STEPS:-3400}     # about 3.1 s a step at d_model 192 beside another run (logit KD)
FIRST_STEPS=${FIRST_STEPS:-2800}   # the rows started before minitbt/malloc.py, at about 3.5 s a step,
                                   # and the baselines and ablation rows, which compare step for step
                                   # with ddtp-2-2-2-2800 (the first 2-2-2 row)
RERUN_STEPS=${RERUN_STEPS:-5800}   # ddtp-2-2-2, trained again on a machine twice as fast (1.6 to 2.1 s
                                   # a step beside another run): first to 5,000 steps (RERUN_STEPS=5000),
                                   # then named again at 5,800 to fill its 3 hours, as the summarization
                                   # rows below were extended
RERUN_STEPS_1_1_8=${RERUN_STEPS_1_1_8:-5000}   # ddtp-1-1-8, trained again on that machine; it reached
                                   # its 180 minutes at step 4,846 (its first run: ddtp-1-1-8-2800)
# Summarization rows: steps per row. They first ran short enough to train and be scored within one
# working session (1,700 / 760 / 2,000 / 2,600 steps for 2-2-8 / 1-1-8 / 2-2-2 / 1-1-1, with MINUTES=90,
# 40, 60, 80), because the run folder did not always survive from one session to the next. A row is
# then extended towards the full 3 hours by naming it again with a larger step count here: its
# last.npz resumes with --max-steps raised (--allow-change max_steps), so its learning rate, which
# had decayed to 0, climbs back to the linear schedule of the longer run, and MINUTES caps its
# training time in total, both parts together. best.npz is the best validation score of both parts.
# A step took 1.5 to 1.9 s beside another run on the machine that trained them.
# SUMM_STEPS_1_1_1 may be set from outside: the retrain of docs/results.md used 4700.
# summ-2-2-2 and summ-1-1-1 finished their 6,500 and 5,600 steps in 157 and 171 minutes; they were
# named again at 7,400 and 5,900 to fill their 3 hours (MINUTES=180), as ddtp-2-2-2 was.
SUMM_STEPS_2_2_8=6000 SUMM_STEPS_1_1_8=5000 SUMM_STEPS_2_2_2=7400 SUMM_STEPS_1_1_1=${SUMM_STEPS_1_1_1:-5900}

# The pilot's recipe (docs/quantization.md, "What the pilot chose"): distillation on the logits alone
# (CE + soft CE; TBT's hidden-state and attention MSE terms off), the defaults of --quant otherwise.
budget() { echo "--max-steps $1 --warmup $(($1 / 20)) --max-minutes $MINUTES --eval-every 250 --eval-sentences 500"; }
KD="--kd-hidden 0 --kd-attn 0"
DDTP="--preset small --task data/ddtp-en-de --teacher $DDTP_FP --init $DDTP_FP $KD"
SUMM="--preset small --task data/debian-summ --teacher $SUMM_FP --init $SUMM_FP --max-src-len 96 --max-tgt-len 32 \
      --batch-tokens 4000 $KD"
DDTP_EVAL="--task data/ddtp-en-de --beam 4 --split-sentences"
SUMM_EVAL="--task data/debian-summ --beam 4"

# row -> its training flags. A8 rows learn at 2.5e-4 (TBT's fine-tuning rate); A2/A1 rows at 1e-3, twice
# TBT's 5e-4: the pilot's winner at both 2-2-2 and 1-1-1 (docs/quantization.md, "What the pilot chose").
# The 1-1-1 rows are BiT's multi-step distillation, also the pilot's winner: a 1-1-8 row of the task (its
# best.npz; for ddtp, the first run ddtp-1-1-8-2800) is their teacher and their initial weights, so they
# run after it.
stage() { echo "$1" | sed "s|--teacher [^ ]*|--teacher $2|; s|--init [^ ]*|--init $2|"; }
row() {
    case "$1" in
        ddtp-2-2-8)              echo "$DDTP $(budget $FIRST_STEPS) --quant 2-2-8 --lr 2.5e-4" ;;
        ddtp-1-1-8)              echo "$DDTP $(budget $RERUN_STEPS_1_1_8) --quant 1-1-8 --lr 2.5e-4" ;;
        ddtp-1-1-8-2800)         echo "$DDTP $(budget $FIRST_STEPS) --quant 1-1-8 --lr 2.5e-4" ;;
        ddtp-2-2-2)              echo "$DDTP $(budget $RERUN_STEPS) --quant 2-2-2 --lr 1e-3" ;;
        ddtp-2-2-2-2800)         echo "$DDTP $(budget $FIRST_STEPS) --quant 2-2-2 --lr 1e-3" ;;
        # ddtp-1-1-1 was staged from the first 1-1-8 run (ddtp-1-1-8 was retrained after it)
        ddtp-1-1-1)              echo "$(stage "$DDTP" "$OUT/ddtp-1-1-8-2800/best.npz") $(budget "$DDTP_STEPS") --quant 1-1-1 --lr 1e-3" ;;
        # multi-step at 2-2-2 (not in the pilot): FP -> the 2-2-8 row -> 2-2-2, as the 1-1-1 rows do
        ddtp-multistep-2-2-2)    echo "$(stage "$DDTP" "$OUT/ddtp-2-2-8/best.npz") $(budget "$DDTP_STEPS") --quant 2-2-2 --lr 1e-3" ;;
        # the baselines and the 2-2-2 ablation (TBT Table 3): TWN/BWN weights with min-max activations,
        # + learned activations, + statistics-based weights, + both (= ddtp-2-2-2-2800); with that
        # row's budget, so that each compares with it step for step
        ddtp-twn-2-2-2|ddtp-bwn-1-1-1|ddtp-twn+elastic-2-2-2|ddtp-stats-2-2-2)
                                 echo "$DDTP $(budget $FIRST_STEPS) --quant ${1#ddtp-} --lr 1e-3" ;;
        summ-2-2-8)              echo "$SUMM $(budget $SUMM_STEPS_2_2_8) --quant 2-2-8 --lr 2.5e-4" ;;
        summ-1-1-8)              echo "$SUMM $(budget $SUMM_STEPS_1_1_8) --quant 1-1-8 --lr 2.5e-4" ;;
        summ-2-2-2)              echo "$SUMM $(budget $SUMM_STEPS_2_2_2) --quant 2-2-2 --lr 1e-3" ;;
        summ-1-1-1)              echo "$(stage "$SUMM" "$OUT/summ-1-1-8/best.npz") $(budget $SUMM_STEPS_1_1_1) --quant 1-1-1 --lr 1e-3" ;;
        *) return 1 ;;
    esac
}

ROWS="ddtp-fp ddtp-2-2-8 ddtp-1-1-8 ddtp-1-1-8-2800 ddtp-2-2-2 ddtp-2-2-2-2800 ddtp-1-1-1 ddtp-multistep-2-2-2 ddtp-twn-2-2-2 ddtp-bwn-1-1-1 ddtp-twn+elastic-2-2-2
      ddtp-stats-2-2-2 summ-fp summ-2-2-8 summ-1-1-8 summ-2-2-2 summ-1-1-1"
if [ "${1:-list}" = list ]; then echo $ROWS; exit 0; fi

score() {   # score MODEL ROW EVAL_FLAGS...: the test split, written to $OUT/ROW/test.json
    local model=$1 name=$2; shift 2
    # shellcheck disable=SC2068
    minitbt --threads 1 eval --model "$model" --split test --packed $@ --hyp-out "$OUT/$name/test.hyp" \
        | tee "$OUT/$name/test.json"
}

keep() {   # keep ROW METRIC: copy the row's log and scores into docs/, draw its learning curve
    local name=$1 metric=$2
    mkdir -p docs/runs/table docs/img/table
    cp "$OUT/$name/test.json" "docs/runs/table/$name.test.json"
    cp "$OUT/$name/test.hyp" "docs/runs/table/$name.test.hyp"     # for docs/score_ci.py
    [ -f "$OUT/$name/metrics.jsonl" ] || return 0        # an FP row: a score, no training
    cp "$OUT/$name/metrics.jsonl" "docs/runs/table/$name.metrics.jsonl"
    python -m minitbt.plot "$OUT/$name/metrics.jsonl" --metric "$metric" --labels "$name" \
        --out "docs/img/table/$name.png"
    curves "${name%%-*}" "$metric"
}

curves() {   # curves TASK METRIC: every kept log of the task (docs/runs/table/TASK-*) in one figure
    local logs
    logs=$(ls docs/runs/table/"$1"-*.metrics.jsonl 2>/dev/null) || return 0
    # shellcheck disable=SC2046,SC2086
    python -m minitbt.plot $logs --metric "$2" --labels $(for f in $logs; do basename "$f" .metrics.jsonl; done) \
        --out "docs/img/table/$1.png"
}

for name in "$@"; do
    if [ "$name" = curves ]; then                   # redraw docs/img/table/{ddtp,summ}.png only
        curves ddtp bleu; curves summ rougeL; continue
    fi
    if [ "${DRY:-0}" = 1 ]; then                      # print, run nothing
        case "$name" in
            ddtp-fp) echo "minitbt --threads 1 eval --model $DDTP_FP --split test --packed $DDTP_EVAL" ;;
            summ-fp) echo "minitbt --threads 1 eval --model $SUMM_FP --split test --packed $SUMM_EVAL" ;;
            *) args=$(row "$name") || { echo "unknown row $name; rows: $ROWS" >&2; exit 2; }
               echo "minitbt --threads 1 train" $args "--out $OUT/$name" ;;
        esac
        continue
    fi
    case "$name" in
        ddtp-fp) mkdir -p "$OUT/$name"; score "$DDTP_FP" "$name" $DDTP_EVAL; keep "$name" bleu; continue ;;
        summ-fp) mkdir -p "$OUT/$name"; score "$SUMM_FP" "$name" $SUMM_EVAL; keep "$name" rougeL; continue ;;
    esac
    args=$(row "$name") || { echo "unknown row $name; rows: $ROWS" >&2; exit 2; }
    args=$(echo $args)
    stage=$(echo "$args" | sed -n "s|.*--teacher \($OUT/[^ ]*\).*|\1|p")   # a multi-step row's stage (row())
    if [ -n "$stage" ] && [ ! -f "$stage" ] && [ ! -f "$OUT/$name/last.npz" ]; then
        echo "$name starts from $stage: run $(basename "$(dirname "$stage")") first" >&2; exit 2
    fi
    mkdir -p "$OUT/$name"
    if [ -f "$OUT/$name/last.npz" ]; then            # cut off or extended: continue from its checkpoint
        steps=$(echo "$args" | sed 's/.*--max-steps \([0-9]*\).*/\1/')
        resume="--resume --out $OUT/$name --max-steps $steps --max-minutes $MINUTES --allow-change max_steps"
        echo "== $name: minitbt --threads 1 train $resume"
        # shellcheck disable=SC2086
        minitbt --threads 1 train $resume >> "$OUT/$name.train.log" 2>&1
    else
        echo "== $name: minitbt --threads 1 train $args --out $OUT/$name"
        # shellcheck disable=SC2086
        minitbt --threads 1 train $args --out "$OUT/$name" > "$OUT/$name.train.log" 2>&1
    fi
    case "$name" in
        ddtp-*) score "$OUT/$name/best.npz" "$name" $DDTP_EVAL; keep "$name" bleu ;;
        summ-*) score "$OUT/$name/best.npz" "$name" $SUMM_EVAL; keep "$name" rougeL ;;
    esac
done
