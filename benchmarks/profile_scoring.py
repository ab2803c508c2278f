"""Where SemGrad's scoring time goes: torch.profiler over a few score_batch calls.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_scoring.py \
        benchmarks/results/smollm2-135m-instruct/sciq-calibration > benchmarks/profile_scoring.txt
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from semgrad_guard import LocalModel, SemGradScorer
from semgrad_guard.evaluation.runner import read_records


def main(run_dir: str, answers: int = 16, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    lm = LocalModel.load()
    pairs = [(r["prompt_ids"], r["response_ids"]) for r in read_records(run_dir)[:answers]]
    scorers = {"semgrad+hybridgrad (calibrated anchor, PG on)": SemGradScorer(lm, profile="auto"),
               "semgrad only (PG off)": SemGradScorer(lm, profile="auto", hybrid=False)}
    for name, scorer in scorers.items():
        scorer.score_batch(pairs[:2])  # warm-up
        start = time.perf_counter()
        results = scorer.score_batch(pairs)
        wall = (time.perf_counter() - start) / len(pairs)
        t = results[0].timings
        print(f"## {name}: {wall:.3f} s per answer (batch {int(t['batch_size'])}); "
              f"forward {t['forward']:.3f}, backward {t['backward']:.3f}, "
              f"aggregate {t['aggregate']:.3f} s per answer")
    scorer = scorers["semgrad+hybridgrad (calibrated anchor, PG on)"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("score_batch"):
            scorer.score_batch(pairs)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main(sys.argv[1])
