"""Where SemGrad's scoring time goes: torch.profiler over batched scoring of SciQ answers.

Generates greedy answers 16 at a time (as the benchmark does), then times SemGrad with and
without PG, reusing generation's keys and values for the prompts and from the ids alone,
and profiles the calibrated pass with and without PG, reusing what generation kept (the
pass then runs only the blocks above the lowest anchor layer, from the hidden state
generation kept there, and takes the outputs generation kept of their linear layers).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_scoring.py > benchmarks/profile_scoring.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.calibration.datasets import load_qa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = LocalModel.load()
    items = load_qa("sciq", split="evaluation", limit=args.answers)
    # Built before generating: a scorer has the model keep the hidden state its pass starts
    # from, so scoring a generation runs only the blocks above it.
    scorers = {"PG on (HybridGrad and SemGrad)": SemGradScorer(lm, profile="auto"),
               "PG off (SemGrad only)": SemGradScorer(lm, profile="auto", hybrid=False)}
    start = time.perf_counter()
    generations = lm.generate_batch([qa_prompt(i.question) for i in items], max_new_tokens=64)
    generate = (time.perf_counter() - start) / len(items)
    pairs = [(g.prompt_ids, g.response_ids) for g in generations]
    print(f"## generate_batch: {generate:.3f} s per answer ({len(items)} answers, "
          f"{args.threads} thread(s))")
    for name, scorer in scorers.items():
        scorer.score_batch(pairs[:2])  # warm-up
        for mode, run in (("reusing generation's caches", lambda s=scorer: s.score_batch(
                generations, release=False)), ("from ids", lambda s=scorer: s.score_batch(pairs))):
            start = time.perf_counter()
            results = run()
            wall = (time.perf_counter() - start) / len(pairs)
            part = {k: sum(r.timings[k] for r in results) / len(results)
                    for k in ("forward", "backward", "aggregate")}
            print(f"## {name}, {mode}: {wall:.3f} s per answer ({wall / generate:.2f}x "
                  f"generation); forward {part['forward']:.3f}, backward "
                  f"{part['backward']:.3f}, aggregate {part['aggregate']:.3f}")
    for name, scorer in scorers.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("score_batch"):
                scorer.score_batch(generations, release=False)
        print(f"\n## {name}, reusing generation's caches, profiled")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25,
                                        max_name_column_width=60))


if __name__ == "__main__":
    main()
