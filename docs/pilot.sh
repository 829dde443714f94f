#!/usr/bin/env bash
# The quantization pilot: short QAT runs of each candidate recipe at 2-2-2 and 1-1-1 on ddtp-en-de,
# to choose what the full runs of docs/tbt_table.sh should use (docs/quantization.md, "The pilot").
#
#     bash docs/pilot.sh list                          # the candidates
#     bash docs/pilot.sh tbt-2-2-2 lsq-2-2-2 ...       # run candidates, one after another
#     bash docs/pilot.sh seqkd-data                    # the sequence-level KD task (before seqkd-*)
#     bash docs/pilot.sh table                         # the pilot table from runs/pilot/*/metrics.jsonl
#     DRY=1 bash docs/pilot.sh $(bash docs/pilot.sh list)   # print every command without running it
#
#     TEACHER=runs/ddtp-fp192/best.npz MINUTES=30 STEPS=600 bash docs/pilot.sh tbt-1-1-1
#
# Every candidate starts from TEACHER's weights (--init) and distils from it (--teacher), with one
# BLAS thread. A run stops after MINUTES of training (validation excluded) or STEPS steps, whichever
# comes first; the learning rate decays linearly to 0 at STEPS, so set STEPS to about what one run
# reaches in MINUTES (1,000 for the shipped d_model 128 teacher at 1-1-1; fewer for a wider one),
# the same for every candidate. lc+multistep-* starts from lc+stage-* (run that first), lc+seqkd-* from
# seqkd-data. A candidate writes $OUT/<name>/ and $OUT/<name>.log (OUT=runs/pilot by default); one
# that was cut off (its last.npz is there) continues with --resume when it is named again. When it ends,
# its metrics log is copied to docs/runs/pilot/<name>.metrics.jsonl (commit it).
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER=${TEACHER:-models/ddtp-en-de-fp.npz}
MINUTES=${MINUTES:-30}
STEPS=${STEPS:-1000}
WARMUP=${WARMUP:-50}
LR=${LR:-5e-4}                      # TBT's A2/A1 learning rate (docs/tbt_table.sh)
EVAL_SENTENCES=${EVAL_SENTENCES:-500}
OUT=${OUT:-runs/pilot}
SEQKD_TASK=$OUT/data/ddtp-en-de-seqkd
SEQKD_BEAM=${SEQKD_BEAM:-1}

BASE="--preset small --task data/ddtp-en-de --teacher $TEACHER --init $TEACHER --lr $LR --warmup $WARMUP \
      --max-steps $STEPS --max-minutes $MINUTES --eval-every 250 --eval-sentences $EVAL_SENTENCES --kd-hidden 1 --kd-attn 1"

# Round 2: each candidate adds one change to round 1's winner, lsq-clipsep (LSQ's 1/sqrt(N Qp) scale
# gradient, the scales clipped apart from the weights); its name is lc+<change>-E-W-A.
LC="--quant-options lsq_grad_scale=1 --clip-scales separate"
r2() {
    local change=${1%-[0-9]-[0-9]-[0-9]} bits=$2
    case "$change" in
        subln)     echo "$BASE --quant $bits ${LC/lsq_grad_scale=1/lsq_grad_scale=1,subln=1}" ;;
        bit)       echo "$BASE --quant bit-$bits $LC" ;;
        paretoq)   echo "$BASE --quant paretoq-$bits $LC" ;;
        code)      echo "$BASE --quant tbt-code-$bits $LC" ;;
        seqkd)     echo "${BASE/--task data\/ddtp-en-de/--task $SEQKD_TASK} --quant $bits $LC" ;;
        kdt2)      echo "$BASE --quant $bits $LC --kd-temperature 2" ;;
        logitkd)   echo "$BASE --quant $bits $LC --kd-hidden 0 --kd-attn 0" ;;     # no hidden / attention MSE
        mse01)     echo "$BASE --quant $bits $LC --kd-hidden 0.1 --kd-attn 0.1" ;; # the MSE terms at 1/10
        lrhi)      echo "${BASE/--lr $LR/--lr 1e-3} --quant $bits $LC" ;;
        lrlo)      echo "${BASE/--lr $LR/--lr 2.5e-4} --quant $bits $LC" ;;
        long)      local b=${BASE/--max-minutes $MINUTES/--max-minutes $((2 * MINUTES))}           # budget x2
                   echo "${b/--max-steps $STEPS/--max-steps $((2 * STEPS))} --quant $bits $LC" ;;
        stage)     echo "${BASE/--lr $LR/--lr 2.5e-4} --quant $bits $LC" ;;          # multi-step, stage 1 (A8)
        multistep) local stage=$OUT/lc+stage-${bits%-*}-8/best.npz                  # FP -> E-W-8 -> E-W-A
                   echo "${BASE//$TEACHER/$stage} --quant $bits $LC" ;;
        *) return 1 ;;
    esac
}

# candidate -> its flags (the bits, E-W-A, are the candidate's suffix)
flags() {
    local name=$1 bits
    bits=$(echo "$name" | grep -o '[0-9]-[0-9]-[0-9]$') || return 1
    case "$name" in
        lc+*)           r2 "${name#lc+}" "$bits" ;;                                        # round 2, below
        tbt-*)          echo "$BASE --quant $bits --quant-options lsq_grad_scale=0 --clip-scales global" ;;  # the paper
        lsq-clipsep-*)  echo "$BASE --quant $bits --quant-options lsq_grad_scale=1 --clip-scales separate" ;;
        lsq-*)          echo "$BASE --quant $bits --quant-options lsq_grad_scale=1 --clip-scales global" ;;  # LSQ's 1/sqrt(N Qp)
        clipsep-*)      echo "$BASE --quant $bits --quant-options lsq_grad_scale=0 --clip-scales separate" ;;  # scales out of the clip
        *) return 1 ;;
    esac
}

CANDIDATES="tbt-2-2-2 lsq-2-2-2 clipsep-2-2-2 lsq-clipsep-2-2-2 tbt-1-1-1 lsq-1-1-1 clipsep-1-1-1 lsq-clipsep-1-1-1
            lc+subln-2-2-2 lc+code-2-2-2 lc+paretoq-2-2-2 lc+seqkd-2-2-2 lc+stage-2-2-8 lc+multistep-2-2-2
            lc+kdt2-2-2-2 lc+lrhi-2-2-2 lc+lrlo-2-2-2 lc+long-2-2-2 lc+logitkd-2-2-2 lc+mse01-2-2-2
            lc+subln-1-1-1 lc+code-1-1-1 lc+bit-1-1-1 lc+paretoq-1-1-1 lc+seqkd-1-1-1 lc+stage-1-1-8
            lc+multistep-1-1-1 lc+kdt2-1-1-1 lc+lrhi-1-1-1 lc+lrlo-1-1-1 lc+long-1-1-1 lc+logitkd-1-1-1 lc+mse01-1-1-1"

table() {
    python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
print("| variant | steps | minutes | valid loss | valid BLEU | best BLEU (step) |")
print("|---|---:|---:|---:|---:|---:|")
for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
    log = os.path.join(out, name, "metrics.jsonl")
    if not os.path.exists(log):
        continue
    with open(log) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines:
        continue
    last, best = lines[-1], max(lines, key=lambda r: r.get("bleu", 0))
    print(f"| {name} | {last['step']} | {last['minutes']:.1f} | {last['valid_loss']:.3f} | {last.get('bleu', 0):.2f} "
          f"| {best.get('bleu', 0):.2f} ({best['step']}) |")
EOF
}

case "${1:-list}" in
    list) echo $CANDIDATES; exit 0 ;;
    table) table; exit 0 ;;
esac

for name in "$@"; do
    if [ "$name" = seqkd-data ]; then               # the teacher's greedy outputs as the training targets
        mkdir -p "$OUT/data"
        python -c "import json, sys; from minitbt.distill import sequence_kd_task; \
print(json.dumps(sequence_kd_task(sys.argv[1], 'data/ddtp-en-de', sys.argv[2], beam=int(sys.argv[3]), force=True)))" \
            "$TEACHER" "$SEQKD_TASK" "$SEQKD_BEAM" | tee "$OUT/seqkd-data.json"
        continue
    fi
    args=$(flags "$name") || { echo "unknown candidate $name; candidates: $CANDIDATES" >&2; exit 2; }
    args=$(echo $args)                                # one space between flags
    echo "== $name: minitbt --threads 1 train $args --out $OUT/$name"
    if [ -n "${DRY:-}" ]; then continue; fi          # DRY=1: print the commands only
    case "$name" in
        *multistep-*) stage="$OUT/lc+stage-$(echo "$name" | sed 's/.*multistep-\([0-9]\)-\([0-9]\)-.*/\1-\2-8/')/best.npz"
                      [ -f "$stage" ] || { echo "$name starts from $stage: run lc+stage-* first" >&2; exit 2; } ;;
        *seqkd-*)    [ -f "$SEQKD_TASK/task.json" ] || { echo "$name needs $SEQKD_TASK: run seqkd-data first" >&2; exit 2; } ;;
    esac
    mkdir -p "$OUT"
    if [ -f "$OUT/$name/last.npz" ]; then             # cut off earlier: continue from its checkpoint
        minitbt --threads 1 train --resume --out "$OUT/$name" >> "$OUT/$name.log" 2>&1
    else
        # shellcheck disable=SC2086
        minitbt --threads 1 train $args --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    fi
    tail -n 1 "$OUT/$name.log"
    mkdir -p docs/runs/pilot                           # the log docs/results.md cites (runs/ may not survive)
    cp "$OUT/$name/metrics.jsonl" "docs/runs/pilot/$name.metrics.jsonl"
done
