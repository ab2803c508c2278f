"""The guard on the real default model: exact ids from generation reach the scorer."""

from __future__ import annotations

import asyncio

import pytest

from semgrad_guard import qa_prompt
from semgrad_guard.policy import Attempt, AttemptResult, Guard, PolicyConfig

pytestmark = pytest.mark.real_model

QUESTION = "What is the chemical symbol of gold?"


def test_a_chain_on_the_default_model_is_scored_from_its_exact_ids(default_lm,
                                                                    default_scorer) -> None:
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1e9},  # everything passes: this checks the scoring path
        "actions": ["abstain"]}})
    guard = Guard(policy, scorer=default_scorer)
    generation = default_lm.generate(qa_prompt(QUESTION), max_new_tokens=16)

    def chain(attempt: Attempt) -> AttemptResult:
        return AttemptResult(generation.text, generation=generation)

    decision = guard.run(QUESTION, chain)
    assert decision.action == "pass" and decision.score is not None
    assert not decision.score.retokenized and "retokenized" not in decision.flags
    assert decision.score.response_ids == generation.response_ids
    expected = default_scorer.score_generation(generation).value
    assert decision.score.value == pytest.approx(expected, rel=1e-4)

    # The same answer known only as text is re-tokenised against the reference prompt.
    checked = asyncio.run(guard.acheck(QUESTION, generation.text, prompt=qa_prompt(QUESTION)))
    assert checked.score is not None and checked.score.retokenized
    assert checked.score.prompt_ids == generation.prompt_ids


def test_guard_from_model_builds_one_scorer_per_method(default_lm) -> None:
    policy = PolicyConfig.from_dict({
        "version": 1, "default": {"threshold": {"max_score": 1e9}, "profile": "default"},
        "chains": [{"name": "tools", "score": "hybridgrad"}]})
    guard = Guard.from_model(policy, default_lm)
    scorers = guard.scorer
    assert isinstance(scorers, dict)
    assert scorers["default"].method == "semgrad" and scorers["tools"].method == "hybridgrad"
    # The output head's gradient is formed only where a rule reads HybridGrad.
    assert not scorers["default"].hybrid and scorers["tools"].hybrid
    assert scorers["default"].anchor.source == "default"
