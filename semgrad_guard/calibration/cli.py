"""``semgrad-guard calibrate``: search the anchor of a model and cache its profile."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..scoring.profile import ProfileStore
from .anchor_search import format_table, search_anchor


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="search the SemGrad anchor (SPS) and cache the model profile",
        description="Search the anchor offset and layers of a model on paraphrased "
                    "questions (the calibration split by default) and cache the profile, "
                    "which scoring then uses automatically.")
    p.add_argument("--model", help="local folder or hub id (default: the offline default model)")
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain"])
    p.add_argument("--data", action="append", default=None,
                   help="dataset name (sciq, truthfulqa) or a JSONL paraphrase file; "
                        "repeatable (default: sciq and truthfulqa)")
    p.add_argument("--questions", type=int, default=48,
                   help="questions per dataset from the calibration split (default 48)")
    p.add_argument("--paraphrases", type=int, default=6,
                   help="wordings per question, the original included (default 6)")
    p.add_argument("--window", type=int, default=8, help="prompt offsets searched (K, default 8)")
    p.add_argument("--layers", default="upper-half", choices=["upper-half", "best-block"])
    p.add_argument("--question-field", default="query")
    p.add_argument("--paraphrases-field", default="paraphrases")
    p.add_argument("--output", help="also write the profile JSON to this path")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..model.local_model import LocalModel
    from .datasets import load_qa

    lm = LocalModel.load(args.model, prompt_format=args.prompt_format)
    groups: list[list[str]] = []
    sources = args.data or ["sciq", "truthfulqa"]
    for source in sources:
        items = load_qa(source, split="calibration", question_field=args.question_field,
                        answers_field="truthful answer", paraphrases_field=args.paraphrases_field,
                        limit=args.questions)
        groups += [[it.question, *it.paraphrases][: args.paraphrases] for it in items]
    profile, table = search_anchor(
        lm, groups, window=args.window, layer_rule=args.layers,
        data={"sources": sources, "split": "calibration", "per_dataset": args.questions,
              "wordings_per_question": args.paraphrases})
    path = ProfileStore().save(profile)
    if args.output:
        profile.save(args.output)
    if args.json:
        print(json.dumps(json.loads(profile.to_json()) | {"path": str(path)}, indent=2))
    else:
        print(format_table(table, profile.layers, lm, profile.anchor_offset))
        print(f"\nanchor offset {profile.anchor_offset} ({profile.anchor_token!r}), "
              f"layers {profile.layers[0]}..{profile.layers[-1]}, profile {profile.profile_id}")
        print(f"saved to {path}")
    return 0
