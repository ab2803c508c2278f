#!/usr/bin/env bash
# The committed benchmark runs on the default model (SmolLM2-135M-Instruct), CPU only.
# Two chains run side by side, one per dataset: a sampling-free run on the first
# CAL_LIMIT questions of the calibration split (fits the combined score), then every
# method on the evaluation split (lines 300 on), first EVAL_LIMIT questions.
# Every run resumes when started again on the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
CAL_LIMIT=${CAL_LIMIT:-96}
EVAL_LIMIT=${EVAL_LIMIT:-700}
OUT=benchmarks/results/smollm2-135m-instruct
BENCH=(.venv/bin/semgrad-bench run --threads 1 --batch-size 16
       --max-new-tokens 64 --sample-max-new-tokens 32)

chain() {
  local data=$1
  "${BENCH[@]}" --data "$data" --split calibration --limit "$CAL_LIMIT" \
    --methods semgrad,likelihood --output "$OUT/$data-calibration"
  "${BENCH[@]}" --data "$data" --split evaluation --limit "$EVAL_LIMIT" \
    --output "$OUT/$data-evaluation" --calibration-run "$OUT/$data-calibration"
}

chain sciq > "$OUT-sciq.log" 2>&1 &
chain truthfulqa > "$OUT-truthfulqa.log" 2>&1 &
wait
