"""``semgrad-guard fit-thresholds``: fit a chain's threshold on labelled questions.

It answers each question greedily with the model, scores the answers, judges them
against the gold answers, fits a threshold (for a target error rate among passed
answers, or a target coverage) and a calibrated probability of error, and writes both
into the chain's rule of the policy file, leaving the rest of the file as it was.

    semgrad-guard fit-thresholds --data sciq --policy policy.yaml --chain rag \\
        --target-error 0.3 --limit 100
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import CalibrationError, ConfigError
from ..scoring.result import SCORE_NAMES
from .config import PolicyConfig


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
    parser.add_argument("--score", default="semgrad", choices=SCORE_NAMES,
                        help="the score the rule reads (default: semgrad)")
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
    parser.add_argument("--answers", default=None, metavar="FILE",
                        help="a JSONL file of labelled answers: reused when it was made with "
                             "the same data, split, limit and model, else written, so a refit "
                             "(another target or score) needs no new generation")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the fit without writing the policy file")
    parser.set_defaults(func=run_fit_thresholds)


@dataclass(frozen=True)
class LabelledScore:
    """One calibration question: its greedy answer, score and correctness."""

    index: int
    question: str
    answer: str
    scores: dict[str, float]
    correct: bool
    stop_reason: str = ""


def run_fit_thresholds(args: argparse.Namespace) -> int:
    """The command: generate, score, judge, fit, write."""
    from ..calibration.thresholds import (
        fit_platt,
        threshold_for_coverage,
        threshold_for_error,
    )

    policy_path = Path(args.policy)
    document = read_policy_document(policy_path)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    rule = _existing_rule(document, policy_path, args.chain)
    profile = "auto" if rule is None else rule.get("profile", "auto")
    settings = {"data": str(args.data), "split": args.split, "limit": args.limit,
                "model": args.model or "default", "profile": profile,
                "max_new_tokens": args.max_new_tokens}
    done = _saved_answers(args.answers, settings) if args.answers else []
    if args.answers and not done:
        _start_answers_file(args.answers, settings)
    labelled = label_answers(
        args.data, split=args.split, limit=args.limit, model=args.model, profile=profile,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, done=done,
        on_batch=(lambda rows: _append_answers(args.answers, rows)) if args.answers else None)
    missing = [r.index for r in labelled if args.score not in r.scores]
    if missing:
        raise CalibrationError(f"score {args.score!r} was not computed for question "
                               f"{missing[0]}")
    scores = [r.scores[args.score] for r in labelled]
    correct = [r.correct for r in labelled]
    if args.target_error is not None:
        fit = threshold_for_error(scores, correct, args.target_error)
    else:
        fit = threshold_for_coverage(scores, args.target_coverage, correct)
    platt = fit_platt(scores, correct, transform=args.transform)
    from ..evaluation.datasets import dataset_name

    model_name = args.model or "default"
    threshold: dict[str, Any] = {}
    probability_at_cut = float(platt.error_probability([fit.threshold])[0])
    if args.threshold_kind == "score":
        threshold["max_score"] = _round(fit.threshold)
    else:
        if platt.coef <= 0:
            raise CalibrationError(
                f"the fitted probability of error does not rise with the score (coef "
                f"{platt.coef:.4g}); a max_error_probability threshold would be meaningless "
                f"here, use --threshold-kind score")
        threshold["max_error_probability"] = _round(probability_at_cut)
    threshold["calibration"] = {
        "method": "platt", "score": args.score, "transform": args.transform,
        "coef": _round(platt.coef),
        "intercept": _round(platt.intercept), "n": platt.n,
        "data": f"{dataset_name(args.data)}:{args.split}", "model": model_name,
    }
    threshold["fit"] = {
        fit.target: fit.target_value, "coverage": _round(fit.coverage),
        "error_rate": None if fit.error_rate is None else _round(fit.error_rate),
        "base_error_rate": None if fit.base_error_rate is None else _round(fit.base_error_rate),
        "error_probability_at_threshold": _round(probability_at_cut),
        "n": fit.n, "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(_report(args, fit, platt, probability_at_cut))
    updated = set_threshold(document, args.chain, threshold, args.score)
    # Validate the whole file before writing it.
    PolicyConfig.from_dict(_plain(updated), source=str(policy_path))
    if args.dry_run:
        print("dry run: the policy file was not changed")
        return 0
    write_policy_document(policy_path, updated)
    print(f"wrote the threshold of rule {args.chain!r} into {policy_path}")
    return 0


def label_answers(data: str, *, split: str = "calibration", limit: int | None = None,
                  model: str | None = None, profile: str = "auto",
                  batch_size: int = 8, max_new_tokens: int = 32, lm: Any = None,
                  scorer: Any = None, judge: Any = None, done: Sequence[LabelledScore] = (),
                  on_batch: Callable[[list[LabelledScore]], None] | None = None
                  ) -> list[LabelledScore]:
    """Greedy answers to the labelled questions, with every score and their correctness.

    Questions already in ``done`` (by line index) are not asked again; ``on_batch``
    receives each new batch as soon as it is labelled (to save progress).
    """
    from tqdm import tqdm

    from ..evaluation.datasets import dataset_name, load_qa
    from ..evaluation.judges import judge_for
    from ..model.local_model import LocalModel
    from ..model.prompts import qa_prompt
    from ..scoring.semgrad import SemGradScorer

    items = load_qa(data, split=split, limit=limit)  # type: ignore[arg-type]
    if not items:
        raise CalibrationError(f"dataset {data!r} has no questions in split {split!r}")
    wanted = {item.index for item in items}
    previous = [row for row in done if row.index in wanted]
    known = {row.index for row in previous}
    items = [item for item in items if item.index not in known]
    if not items:
        return sorted(previous, key=lambda row: row.index)
    if previous:
        print(f"{len(previous)} labelled answers reused, {len(items)} to go", file=sys.stderr)
    if lm is None:
        lm = LocalModel.load(model)
    if scorer is None:
        scorer = SemGradScorer(lm, profile=None if profile == "default" else profile)
    judge = judge or judge_for(dataset_name(data))
    results: list[LabelledScore] = []
    generating = scoring = 0.0
    with tqdm(total=len(items), desc="generate, score, judge", unit="q",
              file=sys.stderr) as bar:
        for start in range(0, len(items), max(1, batch_size)):
            chunk = items[start:start + max(1, batch_size)]
            t0 = time.perf_counter()
            generations = lm.generate_batch([qa_prompt(item.question) for item in chunk],
                                            max_new_tokens=max_new_tokens)
            t1 = time.perf_counter()
            scored = scorer.score_batch([(g.prompt_ids, g.response_ids) for g in generations])
            t2 = time.perf_counter()
            generating, scoring = generating + t1 - t0, scoring + t2 - t1
            batch = [LabelledScore(item.index, item.question, generation.text, dict(s.scores),
                                   bool(judge.is_correct(generation.text, item.answers)),
                                   generation.stop_reason)
                     for item, generation, s in zip(chunk, generations, scored, strict=True)]
            results.extend(batch)
            if on_batch is not None:
                on_batch(batch)
            bar.update(len(chunk))
    n = len(results)
    print(f"{n} questions: generation {generating / n:.2f} s and scoring {scoring / n:.2f} s "
          f"per question", file=sys.stderr)
    return sorted([*previous, *results], key=lambda row: row.index)


def _saved_answers(path: str, settings: dict[str, Any]) -> list[LabelledScore]:
    """The labelled answers saved at ``path`` with these settings (none if others)."""
    file = Path(path)
    if not file.is_file():
        return []
    lines = file.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
        if header.get("settings") != settings:
            print(f"{path} was made with other settings; answering again", file=sys.stderr)
            return []
        # A run cut short may leave half a line at the end: drop it.
        rows = []
        for line in lines[1:]:
            try:
                rows.append(LabelledScore(**json.loads(line)))
            except json.JSONDecodeError:
                continue
        return rows
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a labelled-answers file ({exc})") from exc


def _start_answers_file(path: str, settings: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")


def _append_answers(path: str, rows: list[LabelledScore]) -> None:
    with Path(path).open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(asdict(row)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _report(args: argparse.Namespace, fit: Any, platt: Any, p_cut: float) -> str:
    lines = [
        f"rule {args.chain!r}, score {args.score}, {fit.n} labelled answers, "
        f"base error rate {fit.base_error_rate:.3f}",
        f"threshold {fit.threshold:.6g} ({fit.target} {fit.target_value:g}): passes "
        f"{fit.n_passed}/{fit.n} (coverage {fit.coverage:.3f}), error rate among passed "
        f"{fit.error_rate:.3f}",
        f"calibration: p(wrong) = sigmoid({platt.coef:.6g} * "
        f"{'log(score)' if platt.transform == 'log' else 'score'} + {platt.intercept:.6g}); "
        f"p at the threshold {p_cut:.3f}",
    ]
    return "\n".join(lines)


# -- the policy file, edited in place -----------------------------------------------------------
def _yaml() -> Any:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        return None
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def read_policy_document(path: Path) -> Any:
    """The policy file as an editable document (comments kept when ruamel.yaml is
    installed); a missing file starts a new policy."""
    if not path.exists():
        return {"version": 1, "default": {}}
    text = path.read_text(encoding="utf-8")
    yaml = _yaml()
    try:
        if yaml is not None:
            document = yaml.load(text)
        else:
            import yaml as pyyaml

            document = pyyaml.safe_load(text)
    except Exception as exc:  # both parsers raise their own YAMLError
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if document is None:
        return {"version": 1, "default": {}}
    if not hasattr(document, "get"):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


def _existing_rule(document: Any, path: Path, chain: str) -> Any:
    default = document.get("default")
    if chain == (default or {}).get("name", "default"):
        return default
    for rule in document.get("chains") or []:
        if rule.get("name") == chain:
            merged = {k: v for k, v in (default or {}).items() if k not in ("name", "match")}
            merged.update(rule)
            return merged
    return None


def set_threshold(document: Any, chain: str, threshold: dict[str, Any], score: str) -> Any:
    """Put ``threshold`` (and ``score``) into the named rule, adding a chain rule if needed."""
    default = document.get("default")
    if default is None:
        default = document["default"] = {}
    if chain == default.get("name", "default"):
        target = default
    else:
        chains = document.get("chains")
        if chains is None:
            chains = document["chains"] = []
        target = next((rule for rule in chains if rule.get("name") == chain), None)
        if target is None:
            target = {"name": chain}
            chains.append(target)
    inherited = default.get("score", "semgrad") if target is not default else "semgrad"
    if target.get("score", inherited) != score:
        target["score"] = score
    current = target.get("threshold")
    if hasattr(current, "items"):
        # Edit the mapping in place so that the comments around it stay where they are.
        for key in [k for k in current if k not in threshold]:
            del current[key]
        for key, value in threshold.items():
            current[key] = value
    else:
        target["threshold"] = threshold
    return document


def _plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_policy_document(path: Path, document: Any) -> None:
    """Write the document atomically (a crash never leaves half a file)."""
    yaml = _yaml()
    buffer = io.StringIO()
    if yaml is not None:
        yaml.dump(document, buffer)
    else:
        import yaml as pyyaml

        print("semgrad-guard: ruamel.yaml is not installed, so the policy file's comments "
              "are not kept (pip install ruamel.yaml)", file=sys.stderr)
        pyyaml.safe_dump(_plain(document), buffer, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on its own (``python -m semgrad_guard.policy.cli ...``)."""
    parser = argparse.ArgumentParser(prog="semgrad-guard")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fit-thresholds", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["LabelledScore", "label_answers", "register", "run_fit_thresholds", "set_threshold",
           "read_policy_document", "write_policy_document"]
