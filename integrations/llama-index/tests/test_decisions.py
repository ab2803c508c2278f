"""The decision table (tests/behaviours.py) through the evaluator, the guarded query
engine (sync, async, streamed) and the guarded chat engine: each records what ``Guard.check`` records, for pass, abstain,
escalate, flag and every score failure mode, and acts on it."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.llms.semgrad_guard import GuardedChatEngine, GuardedQueryEngine, SemGradEvaluator

from semgrad_guard.errors import ScoringError
from tests.behaviours import ANSWERS, DECISIONS, QUESTION, DecisionCase, recorded

from .support import ScriptedLLM, as_response, meta

ANSWER = ANSWERS[0]
CASES = pytest.mark.parametrize("case", DECISIONS, ids=lambda c: c.name)


@CASES
@pytest.mark.parametrize("twin", ["evaluate", "aevaluate"])
@pytest.mark.asyncio
async def test_the_evaluator(case: DecisionCase, twin: str) -> None:
    expected = case.expected()
    guard = case.guard()
    evaluator = SemGradEvaluator(guard=guard)

    async def evaluate() -> Any:
        if twin == "evaluate":
            return evaluator.evaluate(query=QUESTION, response=ANSWER)
        return await evaluator.aevaluate(query=QUESTION, response=ANSWER)

    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            await evaluate()
    else:
        result = await evaluate()
        # RetryQueryEngine retries what does not pass; an unscored answer is invalid.
        assert result.passing is (case.action == "pass")
        assert result.invalid_result is ("score_failed" in case.flags)
    assert recorded(guard) == expected


@CASES
@pytest.mark.asyncio
@pytest.mark.parametrize("twin", ["query", "aquery", "stream", "astream"])
async def test_the_guarded_query_engine(case: DecisionCase, twin: str,
                                        main_index: VectorStoreIndex) -> None:
    expected = case.expected()
    guard = case.guard()
    engine = GuardedQueryEngine(main_index.as_retriever(similarity_top_k=1), guard,
                                llm=ScriptedLLM(answers=[ANSWER]),
                                streaming=twin.endswith("stream"))

    async def query() -> tuple[str, dict[str, Any]]:
        if twin == "query":
            response = as_response(engine.query(QUESTION))
            return str(response.response), meta(response)
        if twin == "aquery":
            response = as_response(await engine.aquery(QUESTION))
            return str(response.response), meta(response)
        if twin == "stream":
            streamed = engine.query(QUESTION)
            assert isinstance(streamed, StreamingResponse)
            assert len(recorded(guard)) == 1, "decided before the stream is handed out"
            return "".join(streamed.response_gen), streamed.metadata or {}
        astreamed = await engine.aquery(QUESTION)
        assert isinstance(astreamed, AsyncStreamingResponse)
        assert len(recorded(guard)) == 1, "decided before the stream is handed out"
        pieces = [piece async for piece in astreamed.async_response_gen()]
        return "".join(pieces), astreamed.metadata or {}

    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            await query()
    else:
        text, metadata = await query()
        assert metadata["guard_decision"]["action"] == case.action
        assert metadata["uncertain"] is (not case.passed)
        assert text == guard.audit.records()[0].answer
    assert recorded(guard) == expected


@CASES
@pytest.mark.asyncio
@pytest.mark.parametrize("twin", ["chat", "achat"])
async def test_the_guarded_chat_engine(case: DecisionCase, twin: str,
                                       main_index: VectorStoreIndex) -> None:
    expected = case.expected()
    guard = case.guard()
    engine = GuardedChatEngine.from_index(main_index, guard, chat_mode="context",
                                          llm=ScriptedLLM(answers=[ANSWER]),
                                          similarity_top_k=1)

    async def chat() -> Any:
        if twin == "chat":
            return engine.chat(QUESTION)
        return await engine.achat(QUESTION)

    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            await chat()
        assert engine.chat_history == []
    else:
        response = await chat()
        assert meta(response)["guard_decision"]["action"] == case.action
        assert meta(response)["uncertain"] is (not case.passed)
        told = guard.audit.records()[0].answer
        assert response.response == told
        assert [m.content for m in engine.chat_history] == [QUESTION, told]
    assert recorded(guard) == expected
