"""Guard behaviour beyond the shared scenarios: how answers are scored, failure modes,
raising outcomes, custom actions, scorer routing, and validation at construction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from semgrad_guard.errors import (
    AbstainedError,
    ConfigError,
    EmptyResponseError,
    EscalatedError,
    ScoringError,
)
from semgrad_guard.model.generation import Generation
from semgrad_guard.policy import (
    ActionContext,
    Attempt,
    AttemptResult,
    AuditTrail,
    Guard,
    GuardDecision,
    PolicyConfig,
)
from semgrad_guard.testing import ScriptedScorer, scripted_score
from tests.behaviours import RecordingReviewQueue


def policy(*actions: Any, **rule: Any) -> PolicyConfig:
    rule.setdefault("threshold", {"max_score": 0.5})
    return PolicyConfig.from_dict({"version": 1, "default": {"actions": list(actions) or
                                                             ["abstain"], **rule}})


def test_a_generation_is_scored_from_its_exact_ids() -> None:
    scorer = ScriptedScorer([0.1])
    generation = Generation((1, 2, 3), (4, 5), "Au", "eos")
    decision = Guard(policy(), scorer=scorer).check("q", "Au", generation=generation)
    assert scorer.calls == [("generation", (1, 2, 3), (4, 5))]
    assert decision.passed and "retokenized" not in decision.flags


def test_text_is_scored_against_the_prompt_and_flagged_retokenized() -> None:
    scorer = ScriptedScorer([0.1, 0.2])
    guard = Guard(policy(), scorer=scorer)
    decision = guard.check("What is gold?", "Au")
    assert scorer.calls[0] == ("text", "What is gold?", "Au")
    assert "retokenized" in decision.flags
    prompt = [{"role": "user", "content": "Context: ...\nWhat is gold?"}]
    guard.check("What is gold?", "Au", prompt=prompt)
    assert scorer.calls[1] == ("text", prompt, "Au")


def test_a_given_score_is_used_as_is_and_read_with_the_rules_method() -> None:
    scorer = ScriptedScorer([])
    score = scripted_score(0.3)
    score = type(score)(**{**score.__dict__, "scores": {**score.scores, "hybridgrad": 0.9}})
    guard = Guard(policy(score="hybridgrad"), scorer=scorer)
    decision = guard.check("q", "a", score=score)
    assert decision.action == "abstain"
    assert decision.score is not None and decision.score.method == "hybridgrad"
    assert decision.value == 0.9
    assert scorer.calls == []


def test_a_score_the_scorer_did_not_compute_is_a_scoring_failure() -> None:
    score = scripted_score(0.1)
    score = type(score)(**{**score.__dict__, "scores": {"semgrad": 0.1}})
    decision = Guard(policy(score="nll")).check("q", "a", score=score)
    assert decision.action == "abstain"
    assert "score_failed" in decision.flags
    assert "did not compute" in (decision.attempts[0].error or "")


def test_no_scorer_fails_closed() -> None:
    decision = Guard(policy()).check("q", "a")
    assert decision.action == "abstain" and decision.score is None
    assert "no scorer" in (decision.attempts[0].error or "")
    assert "1 could not be scored" in decision.reason


@pytest.mark.parametrize("failure", [EmptyResponseError("empty response"),
                                     RuntimeError("CUDA out of memory")])
def test_on_score_failure_raise(failure: Exception) -> None:
    guard = Guard(policy(on_score_failure="raise"), scorer=ScriptedScorer([failure]))
    with pytest.raises(ScoringError) as info:
        guard.check("q", "a")
    if isinstance(failure, ScoringError):
        assert info.value is failure
    else:
        assert info.value.__cause__ is failure


def test_no_answer_is_never_scored_and_abstains_by_default() -> None:
    audit = AuditTrail()
    scorer = ScriptedScorer([])  # any scoring call would fail loudly
    guard = Guard(policy(), scorer=scorer, audit=audit)
    empty = Generation((1, 2, 3), (4, 4), "", "stop_string")
    decision = guard.check("q", "", generation=empty)
    # A score that came with a blank answer is not read either.
    given = guard.check("q", " \n", score=scripted_score(0.1))
    assert scorer.calls == []
    for d in (decision, given):
        assert d.action == "abstain" and not d.passed and d.score is None
        assert d.flags == ("no_answer",)
        assert d.attempts[0].no_answer and "EmptyResponseError" in (d.attempts[0].error or "")
        assert "1 attempt over max_score 0.5 (1 gave no answer, treated as uncertain)" in d.reason
        assert "kept attempt 0, no answer" in d.reason
    recorded = audit.records()
    assert [r.flags for r in recorded] == [["no_answer"], ["no_answer"]]
    assert recorded[0].attempts[0]["no_answer"] is True and recorded[0].score is None


def test_no_answer_follows_the_failure_mode() -> None:
    empty = Generation((1, 2, 3), (4,), "", "eos")
    opened = Guard(policy(on_score_failure="fail_open"), scorer=ScriptedScorer([])).check(
        "q", "", generation=empty)
    assert opened.action == "pass" and not opened.passed
    assert opened.flags == ("no_answer", "fail_open")
    assert opened.reason == "the model gave no answer; on_score_failure is fail_open"
    with pytest.raises(EmptyResponseError, match="the model gave no answer"):
        Guard(policy(on_score_failure="raise"), scorer=ScriptedScorer([])).check(
            "q", "", generation=empty)


def test_a_retry_after_no_answer_can_pass() -> None:
    answers = iter(["", "Au"])
    scorer = ScriptedScorer([0.1])
    guard = Guard(policy({"type": "retry_with_retrieval", "k_schedule": [8]}, "abstain"),
                  scorer=scorer)
    decision = guard.run("q", lambda attempt: next(answers))
    assert decision.action == "pass" and decision.answer == "Au" and decision.passed
    assert [a.no_answer for a in decision.attempts] == [True, False]
    assert scorer.calls == [("text", "q", "Au")] and "no_answer" in decision.flags


def test_a_non_finite_score_is_a_scoring_failure() -> None:
    decision = Guard(policy(), scorer=ScriptedScorer([float("nan")])).check("q", "a")
    assert decision.action == "abstain" and "score_failed" in decision.flags


def test_max_error_probability_reads_the_calibration() -> None:
    # p = sigmoid(100 * score - 2): p(0.01) = 0.27, p(0.03) = 0.73.
    p = policy(threshold={"max_error_probability": 0.5, "calibration": {
        "score": "semgrad", "coef": 100.0, "intercept": -2.0}})
    guard = Guard(p, scorer=ScriptedScorer([0.01, 0.03]))
    ok, bad = guard.check("q", "a"), guard.check("q", "b")
    assert ok.passed and ok.error_probability == pytest.approx(0.2689, abs=1e-4)
    assert not bad.passed and bad.error_probability == pytest.approx(0.7311, abs=1e-4)
    assert "p_error 0.731" in bad.reason


def test_abstain_can_raise_with_the_decision() -> None:
    audit = AuditTrail()
    guard = Guard(policy({"type": "abstain", "raise_error": True, "message": "no"}),
                  scorer=ScriptedScorer([0.9]), audit=audit)
    with pytest.raises(AbstainedError) as info:
        guard.run("q", lambda attempt: "a")
    decision = info.value.decision
    assert isinstance(decision, GuardDecision)
    assert (decision.action, decision.answer, decision.chosen_answer) == ("abstain", "no", "a")
    assert [r.action for r in audit.records()] == ["abstain"], "recorded before raising"


def test_escalate_can_raise_with_the_decision_and_the_case() -> None:
    queue = RecordingReviewQueue()
    guard = Guard(policy({"type": "escalate", "raise_error": True}),
                  scorer=ScriptedScorer([0.9]), review_queue=queue)
    with pytest.raises(EscalatedError, match="case-1") as info:
        asyncio.run(guard.acheck("q", "a", context=["passage"], metadata={"user": "u1"}))
    assert info.value.decision.case_id == "case-1"
    fields = queue.cases[0].fields
    assert fields["context"] == ["passage"] and fields["rule"] == "default"
    assert fields["metadata"]["user"] == "u1" and len(fields["metadata"]["attempts"]) == 1
    assert fields["components"]["semgrad"] == 0.9


def test_escalation_needs_a_queue_when_the_guard_is_built() -> None:
    with pytest.raises(ConfigError, match="names no review queue"):
        Guard(policy("escalate"), scorer=ScriptedScorer([]))
    with pytest.raises(ConfigError, match="submit"):
        Guard(policy("escalate"), review_queue=object())


def route_to_fallback(context: ActionContext) -> GuardDecision | None:
    if context.best.value is not None and context.best.value > 0.8:
        return context.decision("abstain", "fallback answer", "very uncertain: fallback")
    return None


def test_custom_action_by_import_path_ends_the_walk_or_passes_it_on() -> None:
    p = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5},
        "actions": [{"type": "custom", "handler": f"{__name__}:route_to_fallback"},
                    {"type": "abstain", "message": "plain abstain"}]}},
        handler_modules=[__name__])
    guard = Guard(p, scorer=ScriptedScorer([0.9, 0.6]))
    first = guard.check("q", "a")
    assert (first.answer, first.reason) == ("fallback answer", "very uncertain: fallback")
    second = guard.check("q", "b")
    assert second.answer == "plain abstain"


def test_custom_action_callable_may_be_async_under_arun() -> None:
    seen: list[ActionContext] = []

    async def handler(context: ActionContext) -> GuardDecision:
        seen.append(context)
        return context.decision("pass", context.best.answer, "accepted by reviewer bot",
                                passed=True)

    guard = Guard(policy({"type": "custom", "handler": handler}), scorer=ScriptedScorer([0.9]))
    decision = asyncio.run(guard.arun("q", lambda attempt: "a", run_name="x", tags=["t"]))
    assert decision.action == "pass" and decision.passed
    assert seen[0].run_name == "x" and seen[0].tags == ("t",)
    guard = Guard(policy({"type": "custom", "handler": handler}), scorer=ScriptedScorer([0.9]))
    with pytest.raises(ConfigError, match="use Guard.arun"):
        guard.check("q", "a")


def test_custom_action_must_return_a_decision_or_none() -> None:
    guard = Guard(policy({"type": "custom", "handler": lambda context: "oops"}),
                  scorer=ScriptedScorer([0.9]))
    with pytest.raises(ConfigError, match="returned str"):
        guard.check("q", "a")


def test_actions_that_run_out_abstain() -> None:
    p = policy({"type": "retry_with_retrieval", "attempts": 1})
    decision = Guard(p, scorer=ScriptedScorer([0.9, 0.8])).run("q", lambda a: f"a{a.number}")
    assert decision.action == "abstain" and "no action ended the walk" in decision.reason
    assert [r.attempt.k for r in decision.attempts] == [None, None]


def test_check_skips_retries() -> None:
    p = policy({"type": "retry_with_retrieval", "attempts": 3}, {"type": "abstain"})
    scorer = ScriptedScorer([0.9])
    decision = Guard(p, scorer=scorer).check("q", "a")
    assert decision.action == "abstain" and len(decision.attempts) == 1


def test_retries_are_bounded_and_the_multiplier_widens_the_callers_k() -> None:
    p = policy({"type": "retry_with_retrieval", "attempts": 3, "k_multiplier": 2},
               {"type": "abstain"})
    seen: list[Attempt] = []

    def chain(attempt: Attempt) -> AttemptResult:
        seen.append(attempt)
        return AttemptResult(f"a{attempt.number}")

    decision = Guard(p, scorer=ScriptedScorer([0.9] * 4)).run("q", chain, k=3)
    assert [a.k for a in seen] == [None, 6, 12, 24]
    assert len(decision.attempts) == 4


def test_equal_scores_keep_the_earliest_attempt() -> None:
    p = policy({"type": "retry_with_retrieval", "attempts": 2}, "flag")
    decision = Guard(p, scorer=ScriptedScorer([0.7, 0.7, 0.9])).run("q", lambda a: f"a{a.number}")
    assert (decision.chosen_index, decision.answer) == (0, "a0")


def test_scorers_are_routed_by_rule_name() -> None:
    p = PolicyConfig.from_dict({"version": 1, "default": {"threshold": {"max_score": 0.5}},
                                "chains": [{"name": "rag"}]})
    rag, other = ScriptedScorer([0.1]), ScriptedScorer([0.9])
    guard = Guard(p, scorer={"rag": rag, "default": other})
    assert guard.check("q", "a", run_name="rag").passed
    assert not guard.check("q", "a", run_name="chat").passed
    with pytest.raises(ConfigError, match="unknown rule 'nope'"):
        Guard(p, scorer={"nope": rag})


def test_run_rejects_async_attempt_functions_and_bad_results() -> None:
    async def chain(attempt: Attempt) -> str:
        return "a"

    guard = Guard(policy(), scorer=ScriptedScorer([0.1]))
    with pytest.raises(ConfigError, match="use Guard.arun"):
        guard.run("q", chain)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must return an AttemptResult or a str, got int"):
        guard.run("q", lambda attempt: 3)  # type: ignore[arg-type,return-value]


def test_arun_accepts_a_sync_attempt_function_and_scores_off_the_loop() -> None:
    import threading

    threads: list[str] = []

    class ThreadNotingScorer(ScriptedScorer):
        def score_text(self, prompt, response):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return super().score_text(prompt, response)

    guard = Guard(policy(), scorer=ThreadNotingScorer([0.1]))
    decision = asyncio.run(guard.arun("q", lambda attempt: AttemptResult("a")))
    assert decision.passed
    assert threads and threads[0] != threading.main_thread().name


def test_guard_needs_a_policy_config() -> None:
    with pytest.raises(ConfigError, match="needs a PolicyConfig"):
        Guard({"version": 1})  # type: ignore[arg-type]


def test_decision_to_dict_is_plain_data() -> None:
    import json

    decision = Guard(policy(), scorer=ScriptedScorer([0.2])).run(
        "q", lambda attempt: AttemptResult("a", context=["c"], raw=object()))
    data = decision.to_dict()
    json.dumps(data)
    assert data["attempts"][0]["context"] == ["c"] and data["value"] == 0.2


def _non_finite_score(headline: str) -> Any:
    """A score as a pass over one -inf logit produces it: the gradient scores NaN, the
    likelihood of the answer (which avoids that token) finite."""
    score = scripted_score(0.9)
    nan = float("nan")
    scores = {**score.scores, "semgrad": nan, "hybridgrad": nan, "mean_entropy": nan}
    return type(score)(**{**score.__dict__, "scores": scores, "value": scores[headline],
                          "method": headline, "components": {**score.components,
                                                             "semgrad": nan}})


@pytest.mark.parametrize("headline", ["semgrad", "nll"])
def test_a_non_finite_score_still_escalates_and_is_recorded(tmp_path: Any, headline: str
                                                            ) -> None:
    from semgrad_guard.review import open_review_queue

    queue = open_review_queue(tmp_path / "queue.db")
    audit = AuditTrail(tmp_path / "audit.db")
    guard = Guard(policy("escalate", score=headline), audit=audit, review_queue=queue)
    decision = guard.check("q", "a", score=_non_finite_score(headline))
    assert decision.action == "escalate" and decision.case_id is not None
    assert "score_failed" in decision.flags and decision.score is None
    assert (decision.attempts[0].error or "").startswith("NonFiniteScoreError")
    assert "semgrad = nan" in (decision.attempts[0].error or "")
    case = queue.get(decision.case_id)
    assert case.score is None
    [record] = audit.records()
    assert record.action == "escalate" and record.case_id == decision.case_id
