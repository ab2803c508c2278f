"""``semgrad-guard calibrate``: search the anchor of a model and cache its profile;
``--labelled``: fit the learned probability of error on labelled answers into it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..scoring.profile import ModelProfile, ProfileStore, model_fingerprint
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
    labelled = p.add_argument_group(
        "supervised calibration (--labelled)",
        "Fit the learned probability of error on labelled answers and write it into the "
        "model's profile (the anchor search above is not run: the profile's anchor, or "
        "the default one, is kept). Answers come from --data (generated greedily for the "
        "calibration split, lines 0-299, and judged: containment for short answers, "
        "embedding similarity for TruthfulQA) or from --from-answers. A user's JSONL "
        "file holds one question a line, the question in --question-field (default "
        "'query') and the gold answers, a string or a list, in --answers-field (default "
        "'truthful answer'). A --from-answers file holds answers already labelled, one a "
        "line: prompt_ids, response_ids (the exact token ids), correct (true/false), and "
        "optionally domain, question, answer, features (answers without features are "
        "scored). Needs scikit-learn.")
    labelled.add_argument("--labelled", action="store_true",
                          help="fit on labelled answers instead of searching the anchor")
    labelled.add_argument("--from-answers", action="append", default=[], metavar="FILE",
                          help="JSONL of answers already labelled (repeatable)")
    labelled.add_argument("--answers-field", default="truthful answer",
                          help="field of the gold answers in a --data JSONL file")
    labelled.add_argument("--limit", type=int, default=None, metavar="N",
                          help="use only the first N calibration questions of each --data")
    labelled.add_argument("--answers-dir", metavar="DIR", default=None,
                          help="keep the labelled, scored answers here (one JSONL file per "
                               "data set); an interrupted run resumes from them")
    labelled.add_argument("--judge", default="auto",
                          choices=["auto", "containment", "embedding"],
                          help="how generated answers are judged (auto: embedding for "
                               "TruthfulQA, containment otherwise)")
    labelled.add_argument("--batch-size", type=int, default=8, metavar="N")
    labelled.add_argument("--max-new-tokens", type=int, default=32, metavar="N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.labelled:
        return run_labelled(args)
    if args.from_answers:
        raise ConfigError("--from-answers needs --labelled")
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


def run_labelled(args: argparse.Namespace) -> int:
    """``calibrate --labelled``: answers (generated or given), features, fit, profile."""
    from ..model.local_model import LocalModel
    from ..scoring.semgrad import SemGradScorer
    from .answers_file import LabelledAnswersFile
    from .datasets import dataset_name
    from .judges import ContainmentJudge, EmbeddingJudge, judge_for
    from .labelling import label_answers
    from .supervised import fit_profile, read_labelled_answers, report, score_labelled

    if not args.data and not args.from_answers:
        raise ConfigError("--labelled needs --data (questions to answer) or --from-answers "
                          "(answers already labelled)")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    lm = LocalModel.load(args.model, prompt_format=args.prompt_format)
    scorer = SemGradScorer(lm, hybrid=False)
    template_fp = lm.prompt_format.fingerprint(lm.tokenizer)
    base = scorer.profile or ModelProfile(
        model_name=lm.name, model_fingerprint=model_fingerprint(lm.model),
        template_fingerprint=template_fp, anchor_offset=scorer.anchor.offset,
        layers=scorer.anchor.layers, layer_rule="default")
    folder = Path(args.answers_dir) if args.answers_dir else None
    judges = set()
    rows = []
    for data in args.data or []:
        name = dataset_name(data)
        judge = judge_for(name) if args.judge == "auto" else \
            {"containment": ContainmentJudge, "embedding": EmbeddingJudge}[args.judge]()
        judges.add(judge.name)
        settings = {"data": str(data), "split": "calibration", "limit": args.limit,
                    "model": args.model or "default", "profile": base.profile_id,
                    "max_new_tokens": args.max_new_tokens, "judge": judge.name,
                    "features": True}
        store = LabelledAnswersFile(folder / f"{name}.jsonl", settings) if folder else None
        done = store.resume() if store is not None else []
        rows += label_answers(
            data, split="calibration", limit=args.limit, lm=lm, scorer=scorer, judge=judge,
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, done=done,
            on_batch=store.append if store is not None else None,
            question_field=args.question_field, answers_field=args.answers_field)
    for path in args.from_answers:
        given = read_labelled_answers(path)
        store = None
        if folder is not None:
            store = LabelledAnswersFile(folder / f"{Path(path).stem}.scored.jsonl",
                                        {"from": str(path), "profile": base.profile_id})
            saved = {(r.domain, r.index): r for r in store.resume()}
            given = [saved.get((r.domain, r.index), r) for r in given]
        judges.add("given")
        rows += score_labelled(given, scorer, batch_size=args.batch_size,
                               on_batch=store.append if store is not None else None)
    profile, fit, selection = fit_profile(
        base, rows, default_offset=lm.prompt_format.default_anchor_offset(lm.tokenizer),
        judge="+".join(sorted(judges)),
        data={"sources": [*(str(d) for d in args.data or []),
                          *(Path(p).name for p in args.from_answers)],
              "split": "calibration"})
    path = ProfileStore().save(profile)
    if args.output:
        profile.save(args.output)
    print(report(profile, fit, selection))
    print(f"saved profile {profile.profile_id} to {path}")
    return 0
