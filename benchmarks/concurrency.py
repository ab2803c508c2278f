"""Throughput of one shared model with N concurrent callers, against one call at a time
and against a strict lock.

Each caller answers SciQ questions the way the integrations do: generate an answer, then
score it with SemGrad (``LocalModel.generate`` + ``SemGradScorer.score_generation``), or
in one call (``SemGradScorer.generate_and_score``). The same questions run one at a
time; from N threads that take the model's lock in turn, each call alone (a strict lock,
what a server without micro-batching does); from N threads through the model's batcher;
and from N asyncio tasks. Prints answers per second, the ratio to one at a time, the
mean batch size, and whether every answer and score matched its one-at-a-time twin. All
figures come from one run, so the ratios are comparable on a noisy machine.

    python benchmarks/concurrency.py [--questions 32] [--callers 8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from tqdm.auto import tqdm

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.model.clock import describe

Answer = tuple[tuple[int, ...], float]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    lm = LocalModel.load(device=args.device)
    scorer = SemGradScorer(lm, hybrid=False)
    prompts = [qa_prompt(item.question)
               for item in load_qa("sciq", split="evaluation", limit=args.questions)]
    settings = {"max_new_tokens": args.max_new_tokens}

    def two_calls(prompt: Any) -> Answer:
        generation = lm.generate(prompt, **settings)
        return generation.response_ids, scorer.score_generation(generation).value

    def locked(prompt: Any) -> Answer:
        # The model's lock only: every call runs alone, never batched with another.
        generation = lm.generate_batch([prompt], **settings)[0]
        return generation.response_ids, scorer.score_batch([generation])[0].value

    def one_call(prompt: Any) -> Answer:
        generation, score = scorer.generate_and_score(prompt, **settings)
        return generation.response_ids, score.value

    async def one_await(prompt: Any) -> Answer:
        generation, score = await scorer.agenerate_and_score(prompt, **settings)
        return generation.response_ids, score.value

    two_calls(prompts[0])  # warm-up

    def timed(label: str, run: Callable[[], list[Answer]]) -> dict[str, Any]:
        batches, rows = lm.batcher.batches, lm.batcher.rows
        start = time.perf_counter()
        answers = run()
        seconds = time.perf_counter() - start
        calls = lm.batcher.batches - batches
        return {"label": label, "seconds": seconds, "answers": answers,
                "per_second": len(answers) / seconds,
                "mean_batch": (lm.batcher.rows - rows) / calls if calls else 1.0}

    def sequential(fn: Callable[[Any], Answer]) -> Callable[[], list[Answer]]:
        return lambda: [fn(p) for p in tqdm(prompts, desc="one at a time", leave=False)]

    def threads(fn: Callable[[Any], Answer]) -> Callable[[], list[Answer]]:
        def run() -> list[Answer]:
            with ThreadPoolExecutor(args.callers) as pool:
                return list(tqdm(pool.map(fn, prompts), total=len(prompts),
                                 desc=f"{args.callers} threads", leave=False))
        return run

    def tasks() -> list[Answer]:
        async def everyone() -> list[Answer]:
            gate = asyncio.Semaphore(args.callers)

            async def limited(prompt: Any) -> Answer:
                async with gate:
                    return await one_await(prompt)
            return await asyncio.gather(*(limited(p) for p in prompts))
        return asyncio.run(everyone())

    n = args.callers
    runs = [timed("generate, then score_generation: one at a time", sequential(two_calls)),
            timed(f"the same, {n} threads, strict lock", threads(locked)),
            timed(f"the same, {n} threads, micro-batched", threads(two_calls)),
            timed(f"generate_and_score: {n} threads", threads(one_call)),
            timed(f"agenerate_and_score: {n} asyncio tasks", tasks)]

    reference = runs[0]["answers"]
    for run in runs:
        run["same_answers"] = sum(a[0] == r[0] for a, r in zip(run["answers"], reference,
                                                              strict=True))
        run["same_scores"] = sum(abs(a[1] - r[1]) <= 1e-4 * abs(r[1])
                                 for a, r in zip(run["answers"], reference, strict=True))
    base = runs[0]["per_second"]

    print(f"\ndefault model, {len(prompts)} SciQ questions, at most {args.max_new_tokens} "
          f"new tokens, torch {torch.__version__}, {describe(lm.device)}\n")
    print(f"{'calls':<52}{'answers/s':>10}{'x one at a time':>17}{'mean batch':>12}"
          f"{'same answers, scores':>22}")
    for run in runs:
        print(f"{run['label']:<52}{run['per_second']:>10.2f}{run['per_second'] / base:>17.2f}"
              f"{run['mean_batch']:>12.1f}{run['same_answers']:>12}/{len(prompts)}, "
              f"{run['same_scores']}/{len(prompts)}")
    print("\n(mean batch: rows per call of the model's batcher, generation and scoring "
          "calls together; 1.0 under the strict lock, where every call runs alone; scores "
          "match within 1e-4 relative)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hardware": describe(lm.device), "questions": len(prompts),
                       "callers": args.callers, "max_new_tokens": args.max_new_tokens,
                       "runs": [{k: v for k, v in run.items() if k != "answers"}
                                for run in runs]}, f, indent=2)


if __name__ == "__main__":
    main()
