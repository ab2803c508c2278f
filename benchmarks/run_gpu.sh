#!/usr/bin/env bash
# The benchmark on a CUDA machine, one run after another so that every time is measured
# on an otherwise idle GPU: the evaluation splits first (SciQ's first 500 questions, then
# all of TruthfulQA, then the rest of SciQ), then the calibration splits (which fit the
# combined score), then the summaries, the anchor sweep and the speed figures.
# Every run resumes when started again. PYTHON picks the interpreter (default .venv's),
# RESULTS the folder (default benchmarks/results/smollm2-135m-instruct-cuda).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"  # semgrad_bench, installed or not
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-benchmarks/results/smollm2-135m-instruct-cuda}
BENCH=("$PY" -m semgrad_bench run --device cuda --batch-size 16
       --max-new-tokens 64 --sample-max-new-tokens 32)
mkdir -p "$RESULTS"

"${BENCH[@]}" --data sciq --split evaluation --limit 500 --output "$RESULTS/sciq-evaluation"
"${BENCH[@]}" --data truthfulqa --split evaluation --output "$RESULTS/truthfulqa-evaluation"
"${BENCH[@]}" --data sciq --split evaluation --output "$RESULTS/sciq-evaluation"
for data in sciq truthfulqa; do
  "${BENCH[@]}" --data "$data" --split calibration --methods semgrad,likelihood \
    --output "$RESULTS/$data-calibration"
done
for data in sciq truthfulqa; do
  "${BENCH[@]}" --data "$data" --split evaluation --output "$RESULTS/$data-evaluation" \
    --calibration-run "$RESULTS/$data-calibration" --report-only
done
"$PY" benchmarks/speed.py --device cuda --questions 32 --json "$RESULTS/speed.json" \
  > "$RESULTS/speed.txt"
for data in sciq truthfulqa; do
  "$PY" -m semgrad_bench analysis --device cuda --output "$RESULTS/$data-evaluation"
done
