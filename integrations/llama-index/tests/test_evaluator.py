"""SemGradEvaluator: finds the score of a response (the LLM's own, or a re-tokenised one)
and drives LlamaIndex's RetryQueryEngine and RetrySourceQueryEngine."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.query_engine import (
    RetrieverQueryEngine,
    RetryQueryEngine,
    RetrySourceQueryEngine,
)
from llama_index.llms.semgrad_guard import SemGradEvaluator, SemGradLLM, answer_prompt

from semgrad_guard import ConfigError, ScoringError
from semgrad_guard.testing import ScriptedScorer

from .support import MAIN_PASSAGES, as_response

QUESTION = "Which record does the archive hold?"


def test_the_llm_score_of_the_response_is_used(tiny_llm: SemGradLLM) -> None:
    answer = tiny_llm.complete(QUESTION).text
    call = tiny_llm.last_call
    assert call is not None and call.score is not None
    result = SemGradEvaluator(llm=tiny_llm, max_score=1e9).evaluate(query=QUESTION,
                                                                   response=answer)
    assert result.passing is True and result.score == call.score.value
    assert "exact generation ids" in (result.feedback or "")
    strict = SemGradEvaluator(llm=tiny_llm, max_score=0.0).evaluate(query=QUESTION,
                                                                     response=answer)
    assert strict.passing is False and "over max_score" in (strict.feedback or "")


def test_a_response_the_llm_did_not_write_is_rescored_and_flagged(tiny_llm: SemGradLLM
                                                                  ) -> None:
    contexts = [MAIN_PASSAGES[3]]
    result = SemGradEvaluator(llm=tiny_llm, max_score=1e9).evaluate(
        query=QUESTION, response="Record number 3.", contexts=contexts)
    expected = tiny_llm.scorer.score_text(answer_prompt(QUESTION, contexts), "Record number 3.")
    assert expected.retokenized is True
    assert result.score == pytest.approx(expected.value, rel=1e-5)
    assert "re-tokenised" in (result.feedback or "")


@pytest.mark.asyncio
async def test_async_evaluation_matches(tiny_llm: SemGradLLM) -> None:
    answer = (await tiny_llm.acomplete(QUESTION)).text
    result = await SemGradEvaluator(llm=tiny_llm, max_score=1e9).aevaluate(
        query=QUESTION, response=answer)
    assert result.score == tiny_llm.last_call.score.value  # type: ignore[union-attr]


def test_an_answer_that_cannot_be_scored_fails_closed() -> None:
    closed = SemGradEvaluator(scorer=ScriptedScorer([ScoringError("no ids")]), max_score=1.0)
    result = closed.evaluate(query=QUESTION, response="Record 3.")
    assert result.passing is False and result.invalid_result is True
    assert "no ids" in (result.invalid_reason or "")
    assert closed.evaluate(query=QUESTION, response="  ").passing is False
    opened = SemGradEvaluator(scorer=ScriptedScorer([ScoringError("no ids")]), max_score=1.0,
                              fail_open=True)
    assert opened.evaluate(query=QUESTION, response="Record 3.").passing is True


def test_threshold_and_score_come_from_the_policy_file(tiny_llm: SemGradLLM,
                                                       tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  threshold: {max_score: 1.0}\nchains:\n"
                      "  - name: rag\n    score: nll\n    threshold: {max_score: 0.25}\n")
    evaluator = SemGradEvaluator.from_policy(str(policy), "rag", llm=tiny_llm)
    assert evaluator.threshold.max_score == 0.25 and evaluator.method == "nll"
    answer = tiny_llm.complete(QUESTION).text
    result = evaluator.evaluate(query=QUESTION, response=answer)
    call = tiny_llm.last_call
    assert call is not None and call.score is not None
    assert result.score == call.score.scores["nll"]
    with pytest.raises(ConfigError):
        SemGradEvaluator(max_score=1.0)


def _engine(llm: SemGradLLM, index: VectorStoreIndex) -> RetrieverQueryEngine:
    return RetrieverQueryEngine.from_args(index.as_retriever(similarity_top_k=2), llm=llm)


def test_retry_query_engine_retries_an_uncertain_answer(tiny_llm: SemGradLLM,
                                                        main_index: VectorStoreIndex) -> None:
    Settings.llm = tiny_llm  # FeedbackQueryTransformation reads Settings.llm
    before = len(tiny_llm.calls)
    confident = RetryQueryEngine(_engine(tiny_llm, main_index),
                                 SemGradEvaluator(llm=tiny_llm, max_score=1e9), max_retries=2)
    confident.query(QUESTION)
    assert len(tiny_llm.calls) - before == 1

    before = len(tiny_llm.calls)
    uncertain = RetryQueryEngine(_engine(tiny_llm, main_index),
                                 SemGradEvaluator(llm=tiny_llm, max_score=0.0), max_retries=2)
    response = as_response(uncertain.query(QUESTION))
    calls = tiny_llm.calls[before:]
    assert len(calls) == 3  # the first answer and two retries
    retried_prompt = str(calls[1].prompt)
    assert "Here is a previous bad answer." in retried_prompt
    assert "semgrad uncertainty" in retried_prompt and "is over max_score 0" in retried_prompt
    assert response.response == calls[-1].text


def test_retry_source_query_engine_retries_over_the_sources(tiny_llm: SemGradLLM,
                                                            main_index: VectorStoreIndex
                                                            ) -> None:
    Settings.llm = tiny_llm  # the engine answers again through Settings.llm
    before = len(tiny_llm.calls)
    first = _engine(tiny_llm, main_index)
    engine = RetrySourceQueryEngine(first, SemGradEvaluator(llm=tiny_llm, max_score=0.0),
                                    llm=tiny_llm, max_retries=1)
    response = as_response(engine.query(QUESTION))
    calls = tiny_llm.calls[before:]
    assert len(calls) == 2  # the first answer, then one over a new index of its sources
    sources = [n.node.get_content() for n in response.source_nodes]
    assert len(sources) == 2 and set(sources) <= set(MAIN_PASSAGES)
    assert response.response == calls[-1].text
