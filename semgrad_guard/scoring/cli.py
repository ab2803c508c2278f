"""``semgrad-guard score``: generate (or take) an answer and print every score."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "score", help="score an answer to a question (generating it when none is given)",
        description="Score an answer with SemGrad, HybridGrad and the likelihood baselines. "
                    "Without --answer the model generates one greedily and the exact ids "
                    "are scored; a given answer is re-tokenised (flagged in the output).")
    p.add_argument("--question", required=True)
    p.add_argument("--answer", help="the answer to score (default: generate one)")
    p.add_argument("--model", help="local folder or hub id (default: the offline default model)")
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain"])
    p.add_argument("--raw-prompt", action="store_true",
                   help="send the question as it is, without the reference QA instruction")
    p.add_argument("--method", default="semgrad", help="headline score (default semgrad)")
    p.add_argument("--profile", default="auto",
                   help="'auto' (cached profile, else default anchor), 'none', or a JSON path")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..model.local_model import LocalModel
    from ..model.prompts import qa_prompt
    from .semgrad import SemGradScorer

    lm = LocalModel.load(args.model, prompt_format=args.prompt_format)
    profile = None if args.profile == "none" else args.profile
    scorer = SemGradScorer(lm, method=args.method, profile=profile)
    prompt = args.question if args.raw_prompt else qa_prompt(args.question)
    generation = None
    if args.answer is None:
        generation = lm.generate(prompt, max_new_tokens=args.max_new_tokens)
        score = scorer.score_generation(generation)
        answer = generation.text
    else:
        score = scorer.score_text(prompt, args.answer)
        answer = args.answer
    out: dict[str, Any] = {"question": args.question, "answer": answer, **score.to_dict()}
    if generation is not None:
        out["generation"] = {"stop_reason": generation.stop_reason,
                             "seconds": generation.seconds}
    out["prompt_text"] = lm.tokenizer.decode(score.prompt_ids)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"answer: {answer}")
        for name, value in score.scores.items():
            print(f"  {name:<14} {value:.6g}")
        print(f"anchor {score.anchor_offset} ({score.anchor_token!r}, {score.anchor_source}), "
              f"layers {score.layers[0]}..{score.layers[-1]}")
    return 0
