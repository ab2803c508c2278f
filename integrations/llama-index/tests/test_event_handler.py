"""UncertaintyEventHandler: records the score of every LLM call in a pipeline; it
observes only (LlamaIndex drops a handler's exceptions)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.instrumentation import get_dispatcher
from llama_index.llms.semgrad_guard import (
    LLMCallScore,
    SemGradLLM,
    UncertaintyEventHandler,
    answer_prompt,
)

from semgrad_guard import LocalModel

from .support import ScriptedLLM

QUESTION = "Which record does the archive hold?"


@pytest.fixture
def handler() -> Iterator[UncertaintyEventHandler]:
    handler = UncertaintyEventHandler().attach()
    try:
        yield handler
    finally:
        handler.detach()
    assert handler not in get_dispatcher().event_handlers


@pytest.mark.asyncio
async def test_every_llm_call_of_a_pipeline_is_recorded(
        handler: UncertaintyEventHandler, tiny_llm: SemGradLLM,
        main_index: VectorStoreIndex) -> None:
    main_index.as_query_engine(llm=tiny_llm, similarity_top_k=2).query(QUESTION)
    tiny_llm.complete(QUESTION)
    list(tiny_llm.stream_chat([ChatMessage(role=MessageRole.USER, content=QUESTION)]))
    await tiny_llm.acomplete(QUESTION)
    records = handler.records
    assert [r.kind for r in records] == ["chat", "completion", "chat", "completion"]
    calls = tiny_llm.calls
    assert [r.score for r in records] == [c.score.value for c in calls]  # type: ignore[union-attr]
    assert [r.text for r in records] == [c.text for c in calls]
    assert all(r.source == "llm" and r.retokenized is False and r.error is None
               for r in records)
    assert all(r.span_id for r in records)
    summary = handler.summary()
    assert summary["calls"] == summary["scored"] == 4
    assert summary["max"] == max(r.score for r in records if r.score is not None)


def test_answers_of_another_llm_are_rescored_and_flagged(tiny_lm: LocalModel,
                                                         tiny_llm: SemGradLLM) -> None:
    handler = UncertaintyEventHandler(scorer=tiny_llm.scorer).attach()
    try:
        ScriptedLLM(answers=["Record 3."]).complete(QUESTION)
    finally:
        handler.detach()
    (record,) = handler.records
    expected = tiny_llm.scorer.score_text(answer_prompt(QUESTION), "Record 3.")
    assert record.source == "handler" and record.retokenized is True
    assert record.score == pytest.approx(expected.value, rel=1e-5)


def test_answers_of_another_llm_without_a_scorer_are_recorded_unscored(
        handler: UncertaintyEventHandler) -> None:
    ScriptedLLM(answers=["Record 3."]).complete(QUESTION)
    (record,) = handler.records
    assert record.score is None and "no scorer" in (record.error or "")
    assert handler.summary() == {"calls": 1, "scored": 0, "max": None, "mean": None}


def test_a_failing_handler_cannot_stop_the_pipeline(tiny_llm: SemGradLLM) -> None:
    """LlamaIndex swallows handler exceptions: this is why enforcement lives in
    GuardedQueryEngine, never in a handler."""
    seen: list[LLMCallScore] = []

    def refuse(record: LLMCallScore) -> None:
        seen.append(record)
        raise RuntimeError("too uncertain")

    handler = UncertaintyEventHandler(on_record=refuse).attach()
    try:
        response = tiny_llm.complete(QUESTION)
    finally:
        handler.detach()
    assert response.text and len(seen) == 1
