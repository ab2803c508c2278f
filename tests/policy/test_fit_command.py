"""The fit-thresholds command, on saved labelled answers (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semgrad_guard.cli import main
from semgrad_guard.policy import load_policy
from semgrad_guard.testing import ScriptedScorer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
# Scores and labels of the hand-computed case in test_thresholds.py, each answer six
# times (a fit needs 30 labelled answers): every fraction is that of the five.
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5] * 6
CORRECT = [True, True, False, True, False] * 6
N = len(SCORES)


def saved_answers(path: Path, limit: int | None = N, profile: str = "auto",
                  scores: list[float] = SCORES, correct: list[bool] = CORRECT,
                  fields: list[str] | None = None, data: str = "sciq") -> Path:
    settings: dict[str, object] = {"data": data, "split": "calibration", "limit": limit,
                                   "model": "default", "profile": profile,
                                   "max_new_tokens": 32}
    if fields is not None:
        settings["fields"] = fields
    lines = [json.dumps({"settings": settings})]
    for i, (s, c) in enumerate(zip(scores, correct, strict=True)):
        # nll ranks the answers as semgrad does; max_prob ranks them the other way round.
        lines.append(json.dumps({"index": i, "question": f"q{i}", "answer": f"a{i}",
                                 "scores": {"semgrad": s, "nll": 2 * s, "max_prob": 1 - s},
                                 "correct": c, "stop_reason": "eos"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_writes_the_chain_threshold_and_keeps_the_rest_of_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE.read_text())
    before = load_policy(policy)
    answers = saved_answers(tmp_path / "answers.jsonl")
    code = main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain", "rag",
                 "--target-error", "0.25", "--limit", str(N), "--answers", str(answers)])
    assert code == 0
    out = capsys.readouterr().out
    assert "threshold 0.4 (target_error 0.25): passes 24/30 (coverage 0.800)" in out
    assert "note:" not in out  # the rule's score is kept

    text = policy.read_text()
    assert "# semgrad-guard policy file." in text  # comments kept
    assert "A specialist will review this answer" in text
    assert "# A calibrated probability of error on a raw score" in text
    assert "max_error_probability: 0.5      # stricter than for answers" in text
    assert text.count("score: semgrad") == EXAMPLE.read_text().count("score: semgrad"), \
        "no score key is added where it is inherited"
    fitted = load_policy(policy)
    rag = fitted.rule("rag")
    assert rag.threshold.max_score == 0.4 and rag.threshold.max_error_probability is None
    calibration = rag.threshold.calibration
    assert calibration is not None and calibration.coef > 0 and calibration.n == N
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
                 "--target-coverage", "0.6", "--limit", str(N), "--answers", str(answers),
                 "--threshold-kind", "probability"])
    assert code == 0
    faq = load_policy(policy).rule("faq")
    calibration = faq.threshold.calibration
    assert calibration is not None and faq.threshold.max_error_probability is not None
    # the probability cut sits at the coverage threshold, 0.3
    assert calibration.error_probability(0.3) == pytest.approx(
        faq.threshold.max_error_probability, abs=1e-5)
    assert faq.matches("faq", (), None)


def test_fit_on_another_score_says_so_and_dry_run(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    args = ["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain", "default",
            "--target-coverage", "0.2", "--limit", str(N), "--answers", str(answers),
            "--score", "nll"]
    assert main([*args, "--dry-run"]) == 0
    assert "note: rule 'default' read score semgrad; it now reads nll (--score nll)" in \
        capsys.readouterr().out
    assert load_policy(policy).default.threshold.max_score == 1.0
    assert main(args) == 0
    default = load_policy(policy).default
    assert default.score == "nll" and default.threshold.max_score == 0.2


def test_fit_keeps_the_score_the_rule_reads(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  score: nll\n  threshold: {max_score: 1.0}\n"
                      "chains:\n  - name: rag\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    assert main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain", "rag",
                 "--target-coverage", "0.2", "--limit", str(N), "--answers",
                 str(answers)]) == 0
    out = capsys.readouterr().out
    assert "rule 'rag', score nll" in out and "note:" not in out
    rag = load_policy(policy).rule("rag")
    assert rag.score == "nll"  # inherited from the default rule, as before
    assert rag.threshold.max_score == 0.2 and rag.threshold.calibration is not None
    assert rag.threshold.calibration.score == "nll"
    assert "score: semgrad" not in policy.read_text()


def test_an_inverted_fit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl")
    code = main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain",
                 "default", "--target-error", "0.3", "--limit", str(N), "--answers",
                 str(answers), "--score", "max_prob"])
    assert code == 2
    err = capsys.readouterr().err
    assert "a higher max_prob goes with fewer errors" in err
    assert "would pass the answers most likely to be wrong" in err
    assert load_policy(policy).default.threshold.max_score == 1.0


@pytest.mark.parametrize(("scores", "correct", "why"), [
    ([0.1, 0.2, 0.3, 0.4], [True, True, False, False], "got 4 (2 right, 2 wrong)"),
    (SCORES, [True] * 27 + [False] * 3, "got 30 (27 right, 3 wrong)"),
])
def test_too_few_labels_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    scores: list[float], correct: list[bool], why: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    answers = saved_answers(tmp_path / "answers.jsonl", limit=len(scores), scores=scores,
                            correct=correct)
    code = main(["fit-thresholds", "--data", "sciq", "--policy", str(policy), "--chain",
                 "default", "--target-coverage", "0.5", "--limit", str(len(scores)),
                 "--answers", str(answers)])
    assert code == 2
    err = capsys.readouterr().err
    assert "at least 30 labelled answers, at least 5 of them right and 5 wrong" in err
    assert why in err
    assert load_policy(policy).default.threshold.max_score == 1.0


def test_the_dataset_fields_are_documented_and_configurable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit-thresholds", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for text in ('{"query": "What gas do plants absorb?", "truthful answer": "carbon dioxide"}',
                 "--question-field NAME", "--answer-field NAME", "(default: query)",
                 "(default: 'truthful answer')", "refuses fewer than 30 labelled answers"):
        assert text in help_text, text
    from semgrad_guard.calibration.datasets import load_qa

    data = tmp_path / "support.jsonl"
    data.write_text("".join(json.dumps({"ticket": f"How long is warranty {i}?",
                                        "gold": ["two years", "2 years"]}) + "\n"
                            for i in range(N)))
    item = load_qa(data, question_field="ticket", answers_field="gold")[0]
    assert (item.question, item.answers) == ("How long is warranty 0?",
                                             ["two years", "2 years"])
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\n")
    args = ["fit-thresholds", "--data", str(data), "--policy", str(policy), "--chain",
            "default", "--target-coverage", "0.5", "--limit", str(N)]
    code = main([*args, "--dry-run"])  # the default fields are not in this file
    assert code == 2 and "no field 'query'" in capsys.readouterr().err
    # The fields are part of what saved answers were made with.
    answers = saved_answers(tmp_path / "answers.jsonl", fields=["ticket", "gold"],
                            data=str(data))
    assert main([*args, "--answers", str(answers), "--question-field", "ticket",
                 "--answer-field", "gold"]) == 0


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
                 "default", "--target-error", "0.25", "--limit", str(N), "--answers", str(answers),
                 "--transform", "log"]) == 0
    assert "sigmoid(" in capsys.readouterr().out
    calibration = load_policy(policy).default.threshold.calibration
    assert calibration is not None and calibration.transform == "log" and calibration.coef > 0


def test_labelling_scores_while_generating_as_two_passes_would(
        capsys: pytest.CaptureFixture[str]) -> None:
    from semgrad_guard import SemGradScorer
    from semgrad_guard.calibration.labelling import label_answers
    from tests.core.tiny import tiny_local_model

    lm = tiny_local_model(max_positions=512)
    scorer = SemGradScorer(lm)
    judge = type("Judge", (), {"is_correct": lambda self, a, g: len(a) % 2 == 0})()
    two_pass = label_answers("sciq", limit=3, lm=lm, scorer=scorer, judge=judge,
                             batch_size=2, max_new_tokens=4)
    assert "s and scoring" in capsys.readouterr().err  # two passes by default
    fused = label_answers("sciq", limit=3, lm=lm, scorer=scorer, judge=judge, batch_size=2,
                          max_new_tokens=4, fused=True)
    err = capsys.readouterr().err
    assert "scored while generating" in err and "s and scoring" not in err
    assert len(fused) == 3 and [r.answer for r in fused] == [r.answer for r in two_pass]
    for a, b in zip(fused, two_pass, strict=True):
        assert a.scores.keys() == b.scores.keys()
        for name, value in b.scores.items():
            assert a.scores[name] == pytest.approx(value, rel=1e-4, abs=1e-9), name
