"""The decision table (tests/behaviours.py) through the callback handler, the agent
middleware and the guarded chain: each records what ``Guard.check`` records, for pass,
abstain, escalate, flag and every score failure mode, and acts on it."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from semgrad_guard.errors import ScoringError, UncertainAnswerError
from tests.behaviours import ANSWERS, DECISIONS, QUESTION, DecisionCase, recorded

from langchain_semgrad_guard import GuardedChain, SemGradCallbackHandler, SemGradMiddleware

ANSWER = ANSWERS[0]
CASES = pytest.mark.parametrize("case", DECISIONS, ids=lambda c: c.name)


@CASES
@pytest.mark.parametrize("strict", [False, True], ids=["observing", "strict"])
def test_the_callback_handler(case: DecisionCase, strict: bool) -> None:
    expected = case.expected()
    guard = case.guard()
    handler = SemGradCallbackHandler(policy=guard, strict=strict)
    model = FakeListChatModel(responses=[ANSWER])
    if case.action is None and strict:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            model.invoke(QUESTION, config={"callbacks": [handler]})
    elif strict and case.action != "pass":
        with pytest.raises(UncertainAnswerError) as caught:
            model.invoke(QUESTION, config={"callbacks": [handler]})
        assert caught.value.decision is handler.records[0].decision
    else:
        # Observing: the answer goes through whatever the decision (LangChain keeps a
        # non-strict handler's errors to its log).
        assert model.invoke(QUESTION, config={"callbacks": [handler]}).content == ANSWER
    assert recorded(guard) == expected
    if case.action is None:
        assert handler.records == []
        return
    [record] = handler.records
    assert record.decision is not None and record.decision.action == case.action
    assert record.passed is case.passed
    assert record.source == "retokenized" and record.text == ANSWER


@CASES
def test_the_agent_middleware(case: DecisionCase) -> None:
    expected = case.expected()
    guard = case.guard()
    agent = create_agent(GenericFakeChatModel(messages=iter([AIMessage(ANSWER)])), tools=[],
                         middleware=[SemGradMiddleware(guard)], checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": case.name}}
    ask: Any = {"messages": [{"role": "user", "content": QUESTION}]}
    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            agent.invoke(ask, config)
    else:
        result = agent.invoke(ask, config)
        if case.action == "escalate":
            assert result["__interrupt__"][0].value["case_id"] == "case-1"
        else:
            decided = guard.audit.records()[0].answer  # the answer or the abstention
            assert result["messages"][-1].content == decided
    assert recorded(guard) == expected


@CASES
def test_the_guarded_chain(case: DecisionCase) -> None:
    expected = case.expected()
    guard = case.guard()
    guarded = GuardedChain(RunnableLambda(lambda q: ANSWER), guard, output="decision")
    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            guarded.invoke(QUESTION)
    else:
        assert guarded.invoke(QUESTION).action == case.action
    assert recorded(guard) == expected
