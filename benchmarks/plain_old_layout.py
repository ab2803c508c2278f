"""How many empty answers the stop rule alone recovers, under the plain layout that put
the reference instruction inside "Question: ..." (no instruction before it, no
demonstrations): the "old layout with the new stop rule alone" row of README.md.

Greedy generation only (no scoring), on the first 240 evaluation questions of SciQ and
TruthfulQA with the default model; prints JSON.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plain_old_layout.py \
        > benchmarks/results/smollm2-135m-instruct-plain-949e531/old-layout-new-stop-rule.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import torch
from tqdm import tqdm

from semgrad_guard import LocalModel
from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.model.prompts import QA_INSTRUCTION, PromptFormat


def main() -> None:
    torch.set_num_threads(1)
    old = PromptFormat(kind="plain", plain_instruction=None, plain_examples=())
    lm = LocalModel.load(prompt_format=old)
    out = {}
    for data in ("sciq", "truthfulqa"):
        items = load_qa(data, split="evaluation", limit=240)
        gens = []
        for lo in tqdm(range(0, len(items), 16), desc=data, unit="batch of 16"):
            prompts = [[{"role": "user", "content": QA_INSTRUCTION.format(question=i.question)}]
                       for i in items[lo:lo + 16]]
            gens += lm.generate_batch(prompts, max_new_tokens=64)
        empty = [g for g in gens if g.no_answer]
        out[data] = {"questions": len(gens), "no_answer": len(empty),
                     "no_answer_by_reason": Counter(g.stop_reason for g in empty),
                     "leading_newline_then_content": sum(
                         1 for g in gens if not g.no_answer and not lm.tokenizer.decode(
                             g.response_ids[:1]).strip())}
        print(data, out[data], file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
