"""What keeping costs generation: plain and keeping generations of the same answers, alternated.

A model with a scorer keeps, while generating, what scoring the answer reuses (the
hidden state at the lowest anchor layer and the outputs of the linear layers above it).
This times, by the process's CPU time, generations of the same prompts by that model and
by a model on the same weights that keeps nothing, in alternated pairs, one answer at a
time and 16 at a time, and prints each pair's difference as a share of the plain
generation, with the median.

    OMP_NUM_THREADS=1 python benchmarks/keeping_cost.py [--pairs 6] [--batches 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from tqdm.auto import tqdm

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.calibration.datasets import load_qa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="rounds over two single prompts")
    parser.add_argument("--batches", type=int, default=3, help="pairs of batches of 16")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    keeping = LocalModel.load()
    SemGradScorer(keeping, hybrid=False)  # has the model keep what its pass reuses
    plain = LocalModel(keeping.model, keeping.tokenizer, prompt_format=keeping.prompt_format,
                       name=keeping.name)
    prompts = [qa_prompt(item.question) for item in load_qa("sciq", split="evaluation",
                                                            limit=16)]
    for model in (keeping, plain):  # warm-up
        model.generate_batch(prompts[:2], max_new_tokens=4)

    def share(batch: list) -> float:
        t0 = time.process_time()
        plain.generate_batch(batch, max_new_tokens=args.max_new_tokens)
        t1 = time.process_time()
        keeping.generate_batch(batch, max_new_tokens=args.max_new_tokens)
        t2 = time.process_time()
        return ((t2 - t1) - (t1 - t0)) / (t1 - t0)

    single = [share([prompt]) for _ in tqdm(range(args.pairs), desc="one at a time")
              for prompt in prompts[:2]]
    batched = [share(prompts) for _ in tqdm(range(args.batches), desc="16 at a time")]
    for name, shares in (("one answer at a time", single), ("16 at a time", batched)):
        print(f"{name}: keeping adds {statistics.median(shares):+.1%} of generation (median of "
              f"{len(shares)} pairs; each: {', '.join(f'{x:+.1%}' for x in shares)})")


if __name__ == "__main__":
    main()
