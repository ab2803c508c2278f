"""``semgrad-guard fit-thresholds``: fit a chain's threshold on labelled questions;
``semgrad-guard set-threshold``: set it from recent traffic, without labels.

It answers each question greedily with the model, scores the answers, judges them
against the gold answers, fits a threshold (for a target error rate among passed
answers, or a target coverage) and a calibrated probability of error, and writes both
into the chain's rule of the policy file, leaving the rest of the file as it was.

    semgrad-guard fit-thresholds --data sciq --policy policy.yaml --chain rag \\
        --target-error 0.3 --limit 100

--data is a shipped set (sciq, truthfulqa) or a JSONL file, one question per line:

    {"query": "What gas do plants absorb?", "truthful answer": "carbon dioxide"}

"query" holds the question (--question-field) and "truthful answer" the gold answer,
a string or a list of acceptable answers (--answer-field). Lines 0-299 are the
calibration split. The fit keeps the score the rule reads (--score changes it, and
says so), and refuses fewer than 30 labelled answers (or fewer than 5 right or 5
wrong) and a score whose fitted probability of error falls as the score rises.

``set-threshold`` reads the scores the audit trail recorded for a rule and sets the rule's
threshold at the score that passes a target share of them (a percentile): a
``max_error_probability`` for a rule that reads a probability (``score: learned`` or
``auto``), else a ``max_score``.

    semgrad-guard set-threshold --policy policy.yaml --chain default \\
        --pass-rate 0.8 --from-audit audit.db --since 30d
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..calibration.answers_file import LabelledAnswersFile
from ..calibration.labelling import label_answers
from ..calibration.thresholds import ThresholdFit, threshold_for_coverage
from ..errors import CalibrationError, ConfigError
from ..review.cli import moment
from ..scoring.result import AUTO_SCORE, PROBABILITY_SCORES, SCORE_NAMES, resolve_score_name
from .audit import AuditTrail
from .config import PlattCalibration, PolicyConfig, Rule
from .editing import (
    existing_rule,
    plain,
    read_policy_document,
    set_threshold,
    write_policy_document,
)


def register(subparsers: Any) -> None:
    """Add the ``fit-thresholds`` command."""
    parser = subparsers.add_parser(
        "fit-thresholds", help="fit a chain's threshold and error calibration on labelled data",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, metavar="FILE_OR_NAME",
                        help="a shipped dataset (sciq, truthfulqa) or a JSONL file")
    parser.add_argument("--policy", required=True, metavar="FILE",
                        help="the policy file to update (created when missing)")
    parser.add_argument("--chain", required=True, metavar="NAME",
                        help="the rule to update ('default' for the default rule); a chain "
                             "rule that does not exist is added")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-error", type=float, metavar="X",
                        help="keep the error rate among passed answers at or under X")
    target.add_argument("--target-coverage", type=float, metavar="X",
                        help="pass the fraction X of the answers")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="model folder or hub id (default: the offline default model)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use only the first N questions of the split")
    parser.add_argument("--question-field", default="query", metavar="NAME",
                        help="the JSONL field that holds the question (default: query)")
    parser.add_argument("--answer-field", default="truthful answer", metavar="NAME",
                        help="the JSONL field that holds the gold answer, a string or a list "
                             "of acceptable answers (default: 'truthful answer')")
    parser.add_argument("--score", default=None,
                        choices=[n for n in SCORE_NAMES if n not in PROBABILITY_SCORES],
                        help="the score to fit (default: the one the rule reads, else "
                             "semgrad); a different one switches the rule to it, and the "
                             "command says so")
    parser.add_argument("--split", default="calibration", choices=("calibration", "all"),
                        help="the questions to fit on (default: calibration, lines 0-299)")
    parser.add_argument("--threshold-kind", default="score", choices=("score", "probability"),
                        help="write max_score, or max_error_probability at the fitted cut "
                             "(default: score)")
    parser.add_argument("--transform", default="identity", choices=("identity", "log"),
                        help="fit the error calibration on the score or on its logarithm "
                             "(log suits heavy-tailed gradient scores; default: identity)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="questions generated together (default: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                        help="longest answer generated (default: 32; the questions ask for "
                             "one or a few words)")
    parser.add_argument("--fused", action="store_true",
                        help="score each answer while it is generated, with no second "
                             "forward pass (default: generate, then score in a "
                             "teacher-forced pass; the same scores up to float32 "
                             "rounding, and faster on CPU)")
    parser.add_argument("--answers", default=None, metavar="FILE",
                        help="a JSONL file of labelled answers: reused when it was made with "
                             "the same data, split, limit and model, else written, so a refit "
                             "(another target or score) needs no new generation")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the fit without writing the policy file")
    parser.set_defaults(func=run_fit_thresholds)

    traffic = subparsers.add_parser(
        "set-threshold", help="set a rule's threshold to pass a share of recent traffic",
        description="Set a rule's threshold at the percentile of the scores its recent "
                    "decisions recorded in the audit trail (no labels needed): the rule "
                    "then passes --pass-rate of answers like those.")
    traffic.add_argument("--policy", required=True, metavar="FILE", help="the policy file")
    traffic.add_argument("--chain", default="default", metavar="NAME",
                         help="the rule to update (default: the default rule)")
    traffic.add_argument("--pass-rate", required=True, type=float, metavar="X",
                         help="the share of recent answers that should pass, in (0, 1]")
    traffic.add_argument("--from-audit", required=True, metavar="PATH",
                         help="the audit trail file (AuditTrail) of recent decisions")
    traffic.add_argument("--since", type=moment, default=None,
                         help="only decisions from then on: 2025-01-31 or 30d (30 days ago)")
    traffic.add_argument("--limit", type=int, default=None, metavar="N",
                         help="only the newest N decisions of the rule")
    traffic.add_argument("--dry-run", action="store_true",
                         help="print the threshold without writing the policy file")
    traffic.set_defaults(func=run_set_threshold)


def threshold_from_audit(trail: AuditTrail, rule: Rule, pass_rate: float, *,
                         since: datetime | float | None = None, limit: int | None = None
                         ) -> ThresholdFit:
    """The threshold that passes ``pass_rate`` of the scores ``trail`` recorded for
    ``rule`` (the rule's own score, read from every recorded decision that has it)."""
    records = trail.records(chain=rule.name, since=since, limit=limit)
    values = []
    for record in records:
        try:
            name = resolve_score_name(rule.score, record.scores)
        except KeyError:
            continue
        if name in record.scores:
            values.append(record.scores[name])
    if not values:
        raise CalibrationError(f"the audit trail has no decision of rule {rule.name!r} with "
                               f"score {rule.score!r} ({len(records)} decisions of the rule)")
    return threshold_for_coverage(values, pass_rate)


def run_set_threshold(args: argparse.Namespace) -> int:
    """The command: read recent scores, take the percentile, write the threshold."""
    if not 0.0 < args.pass_rate <= 1.0:
        raise ConfigError(f"--pass-rate must be in (0, 1], got {args.pass_rate}")
    if not Path(args.from_audit).is_file():
        raise ConfigError(f"--from-audit {args.from_audit}: no such file")
    policy_path = Path(args.policy)
    document = read_policy_document(policy_path)
    policy = PolicyConfig.from_dict(plain(document), source=str(policy_path),
                                    check_handlers=False)
    rule = policy.rule(args.chain)
    with AuditTrail(args.from_audit) as trail:
        fit = threshold_from_audit(trail, rule, args.pass_rate, since=args.since,
                                   limit=args.limit)
    key = "max_error_probability" if rule.reads_probability else "max_score"
    threshold: dict[str, Any] = {key: _round(fit.threshold)}
    if key == "max_score" and rule.threshold.calibration is not None:
        threshold["calibration"] = rule.threshold.calibration.model_dump(exclude_none=True)
    threshold["fit"] = {"target_pass_rate": args.pass_rate, "pass_rate": _round(fit.coverage),
                        "n": fit.n, "source": f"audit:{args.from_audit}",
                        "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    print(f"rule {rule.name!r}, score {rule.score}: {key} {fit.threshold:.6g} passes "
          f"{fit.n_passed}/{fit.n} recent answers ({fit.coverage:.3f})")
    return _write_threshold(policy_path, document, rule.name, threshold, str(rule.score),
                            dry_run=args.dry_run)


def run_fit_thresholds(args: argparse.Namespace) -> int:
    """The command: generate, score, judge, fit, write."""
    from ..calibration.thresholds import (
        check_labelled,
        check_rising,
        fit_platt,
        threshold_for_coverage,
        threshold_for_error,
    )

    policy_path = Path(args.policy)
    document = read_policy_document(policy_path)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    rule = existing_rule(document, args.chain)
    profile = "auto" if rule is None else rule.get("profile", "auto")
    rule_score = _rule_score(document, rule)
    score = args.score or rule_score
    if score in PROBABILITY_SCORES or score == AUTO_SCORE:
        raise ConfigError(f"rule {args.chain!r} reads score {score!r}, a probability of error "
                          f"already: it needs no fit (set its max_error_probability, or use "
                          f"set-threshold); give --score to fit a raw score")
    settings: dict[str, Any] = {"data": str(args.data), "split": args.split,
                                "limit": args.limit, "model": args.model or "default",
                                "profile": profile, "max_new_tokens": args.max_new_tokens}
    if (args.question_field, args.answer_field) != ("query", "truthful answer"):
        settings["fields"] = [args.question_field, args.answer_field]
    answers = LabelledAnswersFile(args.answers, settings) if args.answers else None
    done = answers.resume() if answers is not None else []
    labelled = label_answers(
        args.data, split=args.split, limit=args.limit, question_field=args.question_field,
        answers_field=args.answer_field, model=args.model, profile=profile,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, done=done,
        on_batch=answers.append if answers is not None else None, fused=args.fused)
    missing = [r.index for r in labelled if score not in r.scores]
    if missing:
        raise CalibrationError(f"score {score!r} was not computed for question "
                               f"{missing[0]}")
    scores = [r.scores[score] for r in labelled]
    correct = [r.correct for r in labelled]
    check_labelled(correct)
    platt = fit_platt(scores, correct, transform=args.transform)
    check_rising(platt, score)
    if args.target_error is not None:
        fit = threshold_for_error(scores, correct, args.target_error)
    else:
        fit = threshold_for_coverage(scores, args.target_coverage, correct)
    from ..calibration.datasets import dataset_name

    model_name = args.model or "default"
    threshold: dict[str, Any] = {}
    probability_at_cut = float(platt.error_probability([fit.threshold])[0])
    if args.threshold_kind == "score":
        threshold["max_score"] = _round(fit.threshold)
    else:
        threshold["max_error_probability"] = _round(probability_at_cut)
    calibration = PlattCalibration.from_fit(
        platt, score=score, data=f"{dataset_name(args.data)}:{args.split}",
        model=model_name)
    threshold["calibration"] = {key: _round(value) if isinstance(value, float) else value
                                for key, value in calibration.model_dump().items()}
    threshold["fit"] = {
        fit.target: fit.target_value, "coverage": _round(fit.coverage),
        "error_rate": None if fit.error_rate is None else _round(fit.error_rate),
        "base_error_rate": None if fit.base_error_rate is None else _round(fit.base_error_rate),
        "error_probability_at_threshold": _round(probability_at_cut),
        "n": fit.n, "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if score != rule_score:
        print(f"note: rule {args.chain!r} read score {rule_score}; it now reads {score} "
              f"(--score {score})")
    print(_report(args.chain, score, fit, platt, probability_at_cut))
    return _write_threshold(policy_path, document, args.chain, threshold, score,
                            dry_run=args.dry_run)


def _write_threshold(path: Path, document: Any, rule: str, threshold: dict[str, Any],
                     score: str, *, dry_run: bool) -> int:
    """Put the threshold into the rule, validate the whole file, then write it."""
    updated = set_threshold(document, rule, threshold, score)
    PolicyConfig.from_dict(plain(updated), source=str(path), check_handlers=False)
    if dry_run:
        print("dry run: the policy file was not changed")
        return 0
    write_policy_document(path, updated)
    print(f"wrote the threshold of rule {rule!r} into {path}")
    return 0


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _rule_score(document: Any, rule: Any) -> str:
    """The score a rule reads: its own, else the default rule's, else semgrad."""
    if rule is not None and rule.get("score"):
        return str(rule["score"])
    default = document.get("default") or {}
    return str(default.get("score") or "semgrad")


def _report(chain: str, score: str, fit: Any, platt: Any, p_cut: float) -> str:
    lines = [
        f"rule {chain!r}, score {score}, {fit.n} labelled answers, "
        f"base error rate {fit.base_error_rate:.3f}",
        f"threshold {fit.threshold:.6g} ({fit.target} {fit.target_value:g}): passes "
        f"{fit.n_passed}/{fit.n} (coverage {fit.coverage:.3f}), error rate among passed "
        f"{fit.error_rate:.3f}",
        f"calibration: p(wrong) = sigmoid({platt.coef:.6g} * "
        f"{'log(score)' if platt.transform == 'log' else 'score'} + {platt.intercept:.6g}); "
        f"p at the threshold {p_cut:.3f}",
    ]
    return "\n".join(lines)

