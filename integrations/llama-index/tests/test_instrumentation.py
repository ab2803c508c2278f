"""The guard in LlamaIndex's instrumentation: decisions reach event handlers of the root
dispatcher inside the span that decided; plain query and chat engines over a SemGradLLM
carry the score; RetryQueryEngine's last answer is judged too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.instrumentation import root_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.query_engine import RetrieverQueryEngine, RetryQueryEngine
from llama_index.llms.semgrad_guard import (
    GuardDecisionEvent,
    GuardedChatEngine,
    GuardedQueryEngine,
    ScoreSpanHandler,
    SemGradEvaluator,
    SemGradLLM,
)

from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig
from semgrad_guard.testing import ScriptedScorer
from tests.behaviours import ABSTAIN_MESSAGE

from .support import ScriptedLLM, as_response, meta

QUESTION = "Which record does the archive hold?"


class Collector(BaseEventHandler):
    """An instrumentation event handler that keeps the guard's decisions."""

    events: list[GuardDecisionEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "Collector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, GuardDecisionEvent):
            self.events.append(event)


@pytest.fixture
def collector() -> Iterator[Collector]:
    handler = Collector(events=[])
    root_dispatcher.add_event_handler(handler)
    try:
        yield handler
    finally:
        root_dispatcher.event_handlers.remove(handler)


def _policy(max_score: float) -> PolicyConfig:
    return PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": max_score},
        "actions": [{"type": "abstain", "message": ABSTAIN_MESSAGE}]}})


def test_the_span_handler_is_registered_once(tiny_llm: SemGradLLM) -> None:
    SemGradLLM(tiny_llm.model)
    handlers = [h for h in root_dispatcher.span_handlers if isinstance(h, ScoreSpanHandler)]
    assert len(handlers) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("twin", ["query", "aquery"])
async def test_a_query_engine_decision_is_an_event_in_its_span(
        twin: str, collector: Collector, main_index: VectorStoreIndex) -> None:
    guard = Guard(_policy(0.5), scorer=ScriptedScorer([0.9]), audit=AuditTrail())
    engine = GuardedQueryEngine(main_index.as_retriever(similarity_top_k=1), guard,
                                llm=ScriptedLLM(answers=["Record 3."]))
    response = as_response(engine.query(QUESTION) if twin == "query"
                           else await engine.aquery(QUESTION))
    [event] = collector.events
    assert event.component == "GuardedQueryEngine"
    assert event.span_id is not None and event.span_id.startswith(f"GuardedQueryEngine._{twin}-")
    assert (event.rule, event.action, event.passed) == ("default", "abstain", False)
    assert event.value == pytest.approx(0.9) and event.method == "semgrad"
    assert event.decision == meta(response)["guard_decision"]
    record = guard.audit.records()[0]  # type: ignore[union-attr]
    assert (record.action, record.score) == (event.action, event.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("twin", ["chat", "achat"])
async def test_a_chat_engine_decision_is_an_event_in_its_span(
        twin: str, collector: Collector, main_index: VectorStoreIndex) -> None:
    guard = Guard(_policy(0.5), scorer=ScriptedScorer([0.2]))
    engine = GuardedChatEngine.from_index(main_index, guard, chat_mode="context",
                                          llm=ScriptedLLM(answers=["Record 3."]))
    response = engine.chat(QUESTION) if twin == "chat" else await engine.achat(QUESTION)
    [event] = collector.events
    assert event.component == "GuardedChatEngine"
    assert event.span_id is not None and event.span_id.startswith(f"GuardedChatEngine.{twin}-")
    assert (event.action, event.passed, event.value) == ("pass", True, pytest.approx(0.2))
    assert event.decision == meta(response)["guard_decision"]


def test_an_evaluator_decision_is_an_event(collector: Collector) -> None:
    evaluator = SemGradEvaluator(scorer=ScriptedScorer([0.9]), max_score=0.5)
    result = evaluator.evaluate(query=QUESTION, response="Record 3.")
    [event] = collector.events
    assert event.component == "SemGradEvaluator"
    assert (event.passed, event.value) == (result.passing, result.score)


@pytest.mark.asyncio
@pytest.mark.parametrize("twin", ["query", "aquery"])
async def test_a_plain_query_engine_response_carries_the_score(
        twin: str, tiny_llm: SemGradLLM, main_index: VectorStoreIndex) -> None:
    engine = main_index.as_query_engine(llm=tiny_llm, similarity_top_k=1)
    response = as_response(engine.query(QUESTION) if twin == "query"
                           else await engine.aquery(QUESTION))
    call = tiny_llm.last_call
    assert call is not None and call.score is not None
    assert response.response == call.text
    assert meta(response)["semgrad"]["value"] == call.score.value
    assert meta(response)["semgrad"]["retokenized"] is False


@pytest.mark.asyncio
@pytest.mark.parametrize("chat_mode", ["condense_plus_context", "context", "simple"])
async def test_a_plain_chat_engine_response_carries_the_score(
        chat_mode: str, tiny_llm: SemGradLLM, main_index: VectorStoreIndex) -> None:
    engine = main_index.as_chat_engine(chat_mode=chat_mode, llm=tiny_llm, similarity_top_k=1)
    for turn in range(2):  # the second turn condenses first: its answer is the last call
        response = engine.chat(QUESTION) if turn == 0 else await engine.achat("Which one?")
        call = tiny_llm.last_call
        assert call is not None and call.score is not None
        assert response.response == call.text
        assert meta(response)["semgrad"]["value"] == call.score.value


def test_a_response_that_no_semgrad_llm_wrote_gets_no_score(tiny_llm: SemGradLLM,
                                                            main_index: VectorStoreIndex
                                                            ) -> None:
    engine = main_index.as_query_engine(llm=ScriptedLLM(answers=["Record 3."]))
    response = as_response(engine.query(QUESTION))
    assert "semgrad" not in (response.metadata or {})


def _retrying(llm: SemGradLLM, index: VectorStoreIndex, max_score: float) -> RetryQueryEngine:
    Settings.llm = llm  # FeedbackQueryTransformation reads Settings.llm
    engine = RetrieverQueryEngine.from_args(index.as_retriever(similarity_top_k=1), llm=llm)
    return RetryQueryEngine(engine, SemGradEvaluator(llm=llm, max_score=max_score),
                            max_retries=2)


def test_retry_query_engine_marks_an_answer_every_retry_failed(
        tiny_llm: SemGradLLM, main_index: VectorStoreIndex, collector: Collector) -> None:
    before = len(tiny_llm.calls)
    response = as_response(_retrying(tiny_llm, main_index, 0.0).query(QUESTION))
    calls = tiny_llm.calls[before:]
    assert len(calls) == 3 and response.response == calls[-1].text
    # LlamaIndex returns the last retry unevaluated; the evaluator judged it as well.
    assert [e.passed for e in collector.events] == [False, False, False]
    assert meta(response)["uncertain"] is True
    assert meta(response)["guard_decision"]["passed"] is False
    assert meta(response)["semgrad"]["value"] == calls[-1].score.value  # type: ignore[union-attr]


def test_retry_query_engine_marks_an_answer_that_passed(
        tiny_llm: SemGradLLM, main_index: VectorStoreIndex, collector: Collector) -> None:
    before = len(tiny_llm.calls)
    response = as_response(_retrying(tiny_llm, main_index, 1e9).query(QUESTION))
    assert len(tiny_llm.calls) - before == 1
    assert [e.passed for e in collector.events] == [True]  # judged once, not again
    assert meta(response)["uncertain"] is False
