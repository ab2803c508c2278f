"""asyncio.gather over aquery on one SemGradLLM (the real default model): every query
gets the answer and the score it gets alone, on a plain and on a guarded query engine,
even when two queries' answers read the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.llms.semgrad_guard import (
    GuardedQueryEngine,
    OfflineMiniLMEmbedding,
    ScoredCompletion,
    SemGradLLM,
)

from semgrad_guard import LocalModel, UncertaintyScore
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig

from .support import as_response, meta

FACTS = ["Paris is the capital of France.", "Water boils at 100 degrees Celsius at sea level.",
         "The chemical symbol of gold is Au.", "A spider has eight legs.",
         "William Shakespeare wrote Hamlet.", "Mars is called the red planet."]
QUESTIONS = ["What is the capital of France?", "At what temperature does water boil?",
             "What is the chemical symbol of gold?", "How many legs does a spider have?",
             "Who wrote Hamlet?", "Which planet is called the red planet?"]


def close(got: UncertaintyScore | dict[str, Any], want: UncertaintyScore) -> None:
    scores = got["scores"] if isinstance(got, dict) else got.scores
    for key, value in want.scores.items():
        assert scores[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


@pytest.fixture(scope="module")
def index(embed_model: OfflineMiniLMEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex(nodes=[TextNode(text=f) for f in FACTS], embed_model=embed_model)


@pytest.fixture(scope="module")
def llm(default_lm: LocalModel, default_scorer: Any) -> SemGradLLM:
    return SemGradLLM(default_lm, scorer=default_scorer, max_new_tokens=16)


@pytest.fixture(scope="module")
def alone(index: VectorStoreIndex, llm: SemGradLLM) -> dict[str, tuple[str, ScoredCompletion]]:
    """Each question's answer and scored call, one query at a time."""
    engine = index.as_query_engine(llm=llm, similarity_top_k=2)

    async def one_by_one() -> dict[str, tuple[str, ScoredCompletion]]:
        found = {}
        for q in QUESTIONS:
            text = str(await engine.aquery(q))
            assert llm.last_call is not None
            found[q] = (text, llm.last_call)
        return found

    # (Sequential aquery rather than query: LlamaIndex's sync path leaves an event loop
    # open on the thread, which the asyncio.run below would then drop unclosed.)
    return asyncio.run(one_by_one())


@pytest.mark.real_model
def test_gathered_aqueries_answer_and_score_as_alone(
        index: VectorStoreIndex, llm: SemGradLLM,
        alone: dict[str, tuple[str, ScoredCompletion]]) -> None:
    engine = index.as_query_engine(llm=llm, similarity_top_k=2)
    before = len(llm.calls)
    batches = llm.model.batcher.batches

    async def everyone() -> list[Any]:
        return await asyncio.gather(*(engine.aquery(q) for q in QUESTIONS))

    responses = asyncio.run(everyone())
    assert [str(r) for r in responses] == [alone[q][0] for q in QUESTIONS]
    made = llm.calls[before:]
    assert len(made) == len(QUESTIONS)
    by_prompt = {str(call.prompt): call for _, call in alone.values()}
    for call in made:
        want = by_prompt[str(call.prompt)]
        assert call.generation.response_ids == want.generation.response_ids
        assert call.score is not None and want.score is not None
        close(call.score, want.score)
    assert llm.model.batcher.batches - batches < 2 * len(QUESTIONS)  # calls shared batches


@pytest.mark.real_model
def test_gathered_guarded_aqueries_decide_as_alone(
        index: VectorStoreIndex, llm: SemGradLLM,
        alone: dict[str, tuple[str, ScoredCompletion]]) -> None:
    values = sorted(call.score.value for _, call in alone.values() if call.score is not None)
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": (values[2] + values[3]) / 2}, "actions": ["abstain"]}})
    guard = Guard(policy, scorer=llm.scorer, audit=AuditTrail())
    engine = GuardedQueryEngine.from_index(index, guard, llm=llm, similarity_top_k=2)

    async def everyone() -> list[Any]:
        return await asyncio.gather(*(engine.aquery(q) for q in QUESTIONS))

    responses = [as_response(r) for r in asyncio.run(everyone())]
    actions = set()
    for q, response in zip(QUESTIONS, responses, strict=True):
        text, call = alone[q]
        assert call.score is not None
        want = guard.check(q, text, score=call.score)
        decision = meta(response)["guard_decision"]
        actions.add(decision["action"])
        assert decision["action"] == want.action
        assert response.response == want.answer
        close(meta(response)["semgrad"], call.score)
    assert actions == {"pass", "abstain"}


def test_gathered_queries_with_the_same_answer_text_keep_their_own_scores(
        index: VectorStoreIndex, tiny_lm: LocalModel) -> None:
    # A random two-layer model answers every prompt with the same token: the texts agree,
    # the scores (of different prompts) do not.
    llm = SemGradLLM(tiny_lm, max_new_tokens=1)
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1e9}, "actions": ["abstain"]}})
    engine = GuardedQueryEngine.from_index(index, policy, llm=llm, similarity_top_k=2)

    async def one_by_one() -> list[Any]:
        return [await engine.aquery(q) for q in QUESTIONS]

    alone = [as_response(r) for r in asyncio.run(one_by_one())]
    assert len({r.response for r in alone}) == 1
    assert len({meta(r)["semgrad"]["value"] for r in alone}) == len(QUESTIONS)

    async def everyone() -> list[Any]:
        return await asyncio.gather(*(engine.aquery(q) for q in QUESTIONS))

    for got, want in zip(asyncio.run(everyone()), alone, strict=True):
        assert meta(as_response(got))["semgrad"]["value"] == pytest.approx(
            meta(want)["semgrad"]["value"], rel=1e-4)
