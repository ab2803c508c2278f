"""The shared scenarios (tests/behaviours.py) through Guard.run, Guard.arun and, for the
one-attempt scenarios, Guard.check / Guard.acheck; the decision table through both twins."""

from __future__ import annotations

import asyncio

import pytest

from semgrad_guard.errors import ScoringError
from semgrad_guard.policy import (
    Attempt,
    AttemptResult,
    AuditTrail,
    Guard,
    GuardDecision,
    PolicyConfig,
)
from semgrad_guard.testing import ScriptedScorer
from tests.behaviours import (
    ANSWERS,
    DECISIONS,
    QUESTION,
    SCENARIOS,
    DecisionCase,
    Scenario,
    recorded,
)


class ScriptedChain:
    """A chain whose n-th call answers scenario.answers[n]; it records what it was asked."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.seen: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> AttemptResult:
        self.seen.append(attempt)
        return AttemptResult(self.scenario.answers[attempt.number],
                             context=[f"passage at k={attempt.k}"], raw={"n": attempt.number})

    async def acall(self, attempt: Attempt) -> AttemptResult:
        await asyncio.sleep(0)
        return self(attempt)


def check_decision(scenario: Scenario, decision: GuardDecision, chain: ScriptedChain | None,
                   scorer: ScriptedScorer, guard: Guard) -> None:
    expected = scenario.expected
    assert decision.action == expected.action
    assert decision.answer == expected.answer
    assert decision.passed is expected.passed
    assert len(decision.attempts) == expected.attempts
    assert [r.attempt.k for r in decision.attempts] == expected.ks
    assert [r.attempt.number for r in decision.attempts] == list(range(expected.attempts))
    assert decision.chosen_index == expected.best
    assert decision.chosen_answer == scenario.answers[expected.best]
    assert decision.rule == "default"
    assert scorer.remaining == 0, "every scripted score is used, and no more"
    for flag in scenario.flags:
        assert flag in decision.flags
    if chain is not None:
        assert [a.k for a in chain.seen] == expected.ks
        assert decision.raw == {"n": expected.best}
        if scenario.queries is not None:
            assert [a.query for a in chain.seen] == scenario.queries
        if scenario.retrievers is not None:
            assert [a.retriever for a in chain.seen] == scenario.retrievers
    queue = guard.review_queue
    if expected.case:
        assert len(queue.cases) == 1
        assert decision.case_id == queue.cases[0].id
        fields = queue.cases[0].fields
        assert fields["answer"] == scenario.answers[expected.best]
        assert fields["question"] == scenario.question
        assert fields["score"] == pytest.approx(scenario.scores[expected.best])
    else:
        assert decision.case_id is None
    assert guard.audit is not None
    records = guard.audit.records()
    assert [r.action for r in records] == [expected.action]
    assert records[0].answer == expected.answer


def build(scenario: Scenario) -> tuple[Guard, ScriptedScorer]:
    scorer = ScriptedScorer(scenario.scores)
    guard = Guard(PolicyConfig.from_dict(scenario.policy), scorer=scorer, audit=AuditTrail(),
                  review_queue=scenario.review_queue())
    return guard, scorer


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_run(scenario: Scenario) -> None:
    guard, scorer = build(scenario)
    chain = ScriptedChain(scenario)
    decision = guard.run(scenario.question, chain, k=scenario.chain_k)
    check_decision(scenario, decision, chain, scorer, guard)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_arun(scenario: Scenario) -> None:
    guard, scorer = build(scenario)
    chain = ScriptedChain(scenario)
    decision = asyncio.run(guard.arun(scenario.question, chain.acall, k=scenario.chain_k))
    check_decision(scenario, decision, chain, scorer, guard)


ONE_SHOT = [s for s in SCENARIOS if s.expected.attempts == 1]


@pytest.mark.parametrize("scenario", ONE_SHOT, ids=lambda s: s.name)
def test_check(scenario: Scenario) -> None:
    guard, scorer = build(scenario)
    decision = guard.check(scenario.question, scenario.answers[0])
    check_decision(scenario, decision, None, scorer, guard)


@pytest.mark.parametrize("scenario", ONE_SHOT, ids=lambda s: s.name)
def test_acheck(scenario: Scenario) -> None:
    guard, scorer = build(scenario)
    decision = asyncio.run(guard.acheck(scenario.question, scenario.answers[0]))
    check_decision(scenario, decision, None, scorer, guard)


@pytest.mark.parametrize("case", DECISIONS, ids=lambda c: c.name)
def test_the_async_twin_records_what_check_records(case: DecisionCase) -> None:
    guard = case.guard()
    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            case.reference()
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            asyncio.run(guard.acheck(QUESTION, ANSWERS[0]))
        assert recorded(guard) == []
        return
    decision = asyncio.run(guard.acheck(QUESTION, ANSWERS[0]))
    assert recorded(guard) == case.reference()
    assert (decision.action, decision.passed) == (case.action, case.passed)


def test_an_answer_that_comes_with_its_scoring_error_is_not_scored_again() -> None:
    """A producer that tried to score and failed hands the guard its error: the rule's
    failure mode applies to it, as if the guard's scorer had raised it."""
    from semgrad_guard.errors import ContextWindowError

    scorer = ScriptedScorer([])
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "on_score_failure": "fail_open"}})
    decision = Guard(policy, scorer=scorer).check(
        QUESTION, ANSWERS[0], score_error=ContextWindowError("too long"))
    assert scorer.calls == []
    assert (decision.action, decision.passed) == ("pass", False)
    assert decision.attempts[0].error == "ContextWindowError: too long"
    raising = Guard(policy.model_copy(update={"default": policy.default.model_copy(
        update={"on_score_failure": "raise"})}), scorer=scorer)
    with pytest.raises(ContextWindowError):
        raising.check(QUESTION, ANSWERS[0], score_error=ContextWindowError("too long"))
