"""The decision table (tests/behaviours.py) through the evaluator and the guarded query
engine, sync and async: each records what ``Guard.check`` records, for pass, abstain,
escalate, flag and every score failure mode, and acts on it."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.llms.semgrad_guard import GuardedQueryEngine, SemGradEvaluator

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
@pytest.mark.parametrize("twin", ["query", "aquery"])
async def test_the_guarded_query_engine(case: DecisionCase, twin: str,
                                        main_index: VectorStoreIndex) -> None:
    expected = case.expected()
    guard = case.guard()
    engine = GuardedQueryEngine(main_index.as_retriever(similarity_top_k=1), guard,
                                llm=ScriptedLLM(answers=[ANSWER]))

    async def query() -> Any:
        if twin == "query":
            return engine.query(QUESTION)
        return await engine.aquery(QUESTION)

    if case.action is None:
        with pytest.raises(ScoringError, match="scripted scoring failure"):
            await query()
    else:
        response = as_response(await query())
        assert meta(response)["guard_decision"]["action"] == case.action
        assert response.response == guard.audit.records()[0].answer
    assert recorded(guard) == expected
