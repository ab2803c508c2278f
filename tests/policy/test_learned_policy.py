"""Policies that speak probabilities: ``score: learned`` / ``auto`` with
``max_error_probability``, through Guard.check, and thresholds set from recent traffic."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from semgrad_guard.cli import main
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.generation import Generation
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig, load_policy
from semgrad_guard.scoring.metadata import answer_metadata, score_from_metadata
from semgrad_guard.testing import ScriptedScorer, scripted_score


def policy(score: str = "learned", threshold: dict | None = None) -> PolicyConfig:  # type: ignore[type-arg]
    return PolicyConfig.from_dict({"version": 1, "default": {
        "score": score, "threshold": threshold or {"max_error_probability": 0.3},
        "actions": ["abstain"]}})


@pytest.mark.parametrize("score", ["learned", "auto"])
def test_max_error_probability_acts_on_the_learned_score(score: str) -> None:
    guard = Guard(policy(score), scorer=ScriptedScorer([0.1, 0.3, 0.31]))
    decisions = [guard.check("Capital of France?", "Paris") for _ in range(3)]
    assert [d.action for d in decisions] == ["pass", "pass", "abstain"]
    assert [d.error_probability for d in decisions] == [0.1, 0.3, 0.31]
    assert decisions[0].score is not None and decisions[0].score.method == "learned"
    assert "p_error 0.310" in decisions[2].reason
    assert "max_error_probability 0.3" in decisions[2].reason


def test_auto_without_a_learned_score_follows_the_failure_mode() -> None:
    # A scorer without a labelled profile computes no "learned": the answer cannot be
    # judged, so the rule's failure mode (fail closed) decides.
    score = scripted_score(0.1)
    del score.scores["learned"]
    decision = Guard(policy("auto")).check("q", "a", score=score)
    assert decision.action == "abstain" and "score_failed" in decision.flags
    assert "calibrate --labelled" in decision.attempts[0].error


def test_an_out_of_domain_answer_is_flagged() -> None:
    far = replace(scripted_score(0.2), out_of_domain=True)
    decision = Guard(policy()).check("q", "a", score=far)
    assert decision.action == "pass" and "out_of_domain" in decision.flags
    near = Guard(policy()).check("q", "a", score=scripted_score(0.2))
    assert "out_of_domain" not in near.flags
    # The answer's metadata (what both integrations attach) carries it too.
    metadata = answer_metadata(Generation((1,), (2,), "a", "eos"), far, None)
    assert metadata["semgrad"]["out_of_domain"] is True
    restored = score_from_metadata(metadata)
    assert restored is not None and restored.out_of_domain


@pytest.mark.parametrize(("rule", "message"), [
    ({"score": "semgrad", "threshold": {"max_error_probability": 0.3}},
     "max_error_probability on score 'semgrad' needs a fitted 'calibration'"),
    ({"score": "learned", "threshold": {"max_error_probability": 0.3, "calibration": {
        "score": "nll", "coef": 1.0, "intercept": 0.0}}},
     "score 'learned' is already a probability of error"),
    ({"score": "learned", "threshold": {"max_error_probability": 1.5}},
     "less than or equal to 1"),
    ({"score": "probability", "threshold": {"max_error_probability": 0.3}}, "auto"),
    ({"score": "learned", "threshold": {"max_error_probability": 0.3, "max_prob": 0.1}},
     "max_prob"),
])
def test_bad_probability_rules_are_refused(rule: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        PolicyConfig.from_dict({"version": 1, "default": rule})


def test_a_threshold_from_recent_traffic(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    trail_path = tmp_path / "audit.db"
    values = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.9]
    with AuditTrail(trail_path) as trail:
        guard = Guard(policy(threshold={"max_error_probability": 0.99}), audit=trail,
                      scorer=ScriptedScorer(values))
        for _ in values:
            guard.check("q", "a")
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text("version: 1\ndefault:\n  score: learned  # the probability\n"
                           "  threshold: {max_error_probability: 0.99}\n")
    assert main(["set-threshold", "--policy", str(policy_path), "--pass-rate", "0.8",
                 "--from-audit", str(trail_path)]) == 0
    assert "max_error_probability 0.5 passes 8/10" in capsys.readouterr().out
    rule = load_policy(policy_path).default
    assert rule.threshold.max_error_probability == 0.5 and rule.score == "learned"
    assert "# the probability" in policy_path.read_text()
    # A rule on a raw score gets a max_score; a rule with no recorded decision is refused.
    policy_path.write_text("version: 1\ndefault:\n  score: nll\n  threshold: {max_score: 9}\n")
    assert main(["set-threshold", "--policy", str(policy_path), "--pass-rate", "0.8",
                 "--from-audit", str(trail_path)]) == 0
    assert load_policy(policy_path).default.threshold.max_score == 0.5
    assert main(["set-threshold", "--policy", str(policy_path), "--pass-rate", "1.5",
                 "--from-audit", str(trail_path)]) == 2
    assert "--pass-rate must be in (0, 1]" in capsys.readouterr().err
