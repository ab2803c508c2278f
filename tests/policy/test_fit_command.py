"""The fit-thresholds command, on saved labelled answers (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semgrad_guard.cli import main
from semgrad_guard.policy import load_policy
from semgrad_guard.testing import ScriptedScorer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
# Scores and labels of the hand-computed case in test_thresholds.py.
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5]
CORRECT = [True, True, False, True, False]


def saved_answers(path: Path, limit: int | None = 5, profile: str = "auto") -> Path:
    settings = {"data": "sciq", "split": "calibration", "limit": limit, "model": "default",
                "profile": profile, "max_new_tokens": 32}
    lines = [json.dumps({"settings": settings})]
    for i, (s, c) in enumerate(zip(SCORES, CORRECT, strict=True)):
        lines.append(json.dumps({"index": i, "question": f"q{i}", "answer": f"a{i}",
                                 "scores": {"semgrad": s, "nll": 1 - s}, "correct": c,
                                 "stop_reason": "eos"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_writes_the_chain_threshold_and_keeps_the_rest_of_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE.read_text())
    before = load_policy(policy)
    answers = saved_answers(tmp_path / "answers.jsonl")
    code = main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain", "rag",
                 "--target-error", "0.25", "--limit", "5", "--answers", str(answers)])
    assert code == 0
    out = capsys.readouterr().out
    assert "threshold 0.4 (target_error 0.25): passes 4/5 (coverage 0.800)" in out

    text = policy.read_text()
    assert "# semgrad-guard policy file." in text  # comments kept
    assert "A specialist will review this answer" in text
    assert "# A calibrated probability of error instead of a raw score" in text
    assert "score: hybridgrad" in text
    assert text.count("score: semgrad") == EXAMPLE.read_text().count("score: semgrad"), \
        "no score key is added where it is inherited"
    fitted = load_policy(policy)
    rag = fitted.rule("rag")
    assert rag.threshold.max_score == 0.4 and rag.threshold.max_error_probability is None
    calibration = rag.threshold.calibration
    assert calibration is not None and calibration.coef > 0 and calibration.n == 5
    assert calibration.data == "sciq:calibration" and calibration.transform == "identity"
    assert rag.threshold.fit is not None and rag.threshold.fit["coverage"] == 0.8
    # the other rules are untouched
    assert fitted.default == before.default
    assert fitted.rule("agent-tools") == before.rule("agent-tools")


def test_fit_for_coverage_as_a_probability_into_a_new_chain(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    code = main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain", "faq",
                 "--target-coverage", "0.6", "--limit", "5", "--answers", str(answers),
                 "--threshold-kind", "probability"])
    assert code == 0
    faq = load_policy(policy).rule("faq")
    calibration = faq.threshold.calibration
    assert calibration is not None and faq.threshold.max_error_probability is not None
    # the probability cut sits at the coverage threshold, 0.3
    assert calibration.error_probability(0.3) == pytest.approx(
        faq.threshold.max_error_probability, abs=1e-5)
    assert faq.matches("faq", (), None)


def test_fit_on_another_score_and_dry_run(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    args = ["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain", "default",
            "--target-coverage", "0.2", "--limit", "5", "--answers", str(answers),
            "--score", "nll"]
    assert main([*args, "--dry-run"]) == 0
    assert load_policy(policy).default.threshold.max_score == 1.0
    assert main(args) == 0
    default = load_policy(policy).default
    assert default.score == "nll" and default.threshold.max_score == 0.5


def test_fit_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    code = main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain",
                 "default", "--target-error", "0.0", "--limit", "5", "--answers", str(answers),
                 "--score", "nll"])
    assert code == 2
    assert "no threshold keeps the error rate at or under 0" in capsys.readouterr().err
    assert load_policy(policy).default.threshold.max_score == 1.0


class EchoModel:
    """A model stand-in: answers every question with its first word."""

    def generate_batch(self, prompts, max_new_tokens=32):  # type: ignore[no-untyped-def]
        from semgrad_guard.model.generation import Generation

        return [Generation((1,), (2,), p.question.split()[0], "eos") for p in prompts]


def test_labelling_resumes_from_saved_answers_and_reports_each_batch() -> None:
    from semgrad_guard.calibration.labelling import LabelledScore, label_answers

    done = [LabelledScore(1, "saved", "x", {"semgrad": 0.1}, True)]
    batches: list[list[LabelledScore]] = []
    scorer = ScriptedScorer([0.5, 0.5])  # the two answers not saved yet
    rows = label_answers("sciq", limit=3, lm=EchoModel(), scorer=scorer,
                         judge=type("Judge", (), {"is_correct": lambda self, a, g: False})(),
                         batch_size=1, done=done, on_batch=batches.append)
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[1] is done[0], "a saved answer is not asked again"
    assert [[r.index for r in b] for b in batches] == [[0], [2]]
    assert rows[0].scores["semgrad"] == 0.5 and rows[0].correct is False
    assert scorer.remaining == 0


def test_fit_with_a_log_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    assert main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain",
                 "default", "--target-error", "0.25", "--limit", "5", "--answers", str(answers),
                 "--transform", "log"]) == 0
    assert "sigmoid(" in capsys.readouterr().out
    calibration = load_policy(policy).default.threshold.calibration
    assert calibration is not None and calibration.transform == "log" and calibration.coef > 0
