"""GuardedQueryEngine: the shared guard scenarios (tests/behaviours.py) through a real
LlamaIndex retriever and response synthesizer, sync and async, and the shared policy file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.llms.semgrad_guard import GuardedQueryEngine, SemGradLLM, score_from_response

from semgrad_guard import AbstainedError, ConfigError, EscalatedError, GuardOutcome
from semgrad_guard.policy import AuditTrail, EscalateAction, Guard, PolicyConfig, load_policy
from semgrad_guard.testing import ScriptedScorer
from tests.behaviours import SCENARIOS, RecordingReviewQueue, Scenario

from .support import ScriptedLLM, as_response, check_scenario, meta

SHARED_POLICY = Path(__file__).resolve().parents[3] / "examples" / "policy.yaml"


def build(scenario: Scenario, main_index: VectorStoreIndex, other_index: VectorStoreIndex
          ) -> tuple[GuardedQueryEngine, ScriptedLLM, ScriptedScorer, Guard]:
    scorer = ScriptedScorer(scenario.scores)
    guard = Guard(PolicyConfig.from_dict(scenario.policy), scorer=scorer, audit=AuditTrail(),
                  review_queue=scenario.review_queue())
    llm = ScriptedLLM(answers=list(scenario.answers))
    engine = GuardedQueryEngine(
        main_index.as_retriever(similarity_top_k=scenario.chain_k), guard, llm=llm,
        retrievers={"bm25": other_index.as_retriever(similarity_top_k=scenario.chain_k)})
    return engine, llm, scorer, guard


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_shared_scenario(scenario: Scenario, main_index: VectorStoreIndex,
                         other_index: VectorStoreIndex) -> None:
    engine, llm, scorer, guard = build(scenario, main_index, other_index)
    response = as_response(engine.query(scenario.question))
    check_scenario(scenario, response, llm, scorer, guard)


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_shared_scenario_async(scenario: Scenario, main_index: VectorStoreIndex,
                                     other_index: VectorStoreIndex) -> None:
    engine, llm, scorer, guard = build(scenario, main_index, other_index)
    response = as_response(await engine.aquery(scenario.question))
    check_scenario(scenario, response, llm, scorer, guard)


def test_the_shared_policy_file_drives_the_chain_by_name(main_index: VectorStoreIndex,
                                                         other_index: VectorStoreIndex) -> None:
    """examples/policy.yaml, the file the LangChain integration reads too: the engine
    named "rag" gets the "rag" rule (error-probability threshold, two retries on the
    named retrievers with wider k, then escalation)."""
    policy = load_policy(SHARED_POLICY)
    queue = RecordingReviewQueue()
    guard = Guard(policy, scorer=ScriptedScorer([1.0, 0.9, 0.8]), review_queue=queue)
    llm = ScriptedLLM(answers=["first", "second", "third"])
    engine = GuardedQueryEngine(
        main_index.as_retriever(similarity_top_k=4), guard, llm=llm, chain_name="rag",
        retrievers={"bm25": other_index.as_retriever(), "dense-large": main_index.as_retriever()})
    response = as_response(engine.query("Which record does the archive hold?"))
    decision = meta(response)["guard_decision"]
    assert decision["rule"] == "rag"
    assert decision["action"] == "escalate" and len(queue.cases) == 1
    assert [(a["k"], a["retriever"]) for a in decision["attempts"]] == [
        (None, None), (8, "bm25"), (16, "dense-large")]
    assert [len(a["context"]) for a in decision["attempts"]] == [4, 8, 16]
    assert decision["attempts"][1]["query"].endswith("Answer using the retrieved passages.")
    escalate = policy.rule("rag").actions[-1]
    assert isinstance(escalate, EscalateAction)
    assert response.response == escalate.pending_message
    other = GuardedQueryEngine(main_index.as_retriever(), guard, llm=ScriptedLLM(answers=["x"]),
                               chain_name="support-bot")
    assert other.rule.name == "default"


def test_a_retriever_the_policy_names_must_be_given(main_index: VectorStoreIndex) -> None:
    policy = load_policy(SHARED_POLICY)
    guard = Guard(policy, scorer=ScriptedScorer([]), review_queue=RecordingReviewQueue())
    with pytest.raises(ConfigError, match="'bm25'"):
        GuardedQueryEngine(main_index.as_retriever(), guard, llm=ScriptedLLM(answers=[]),
                           chain_name="rag")


@pytest.mark.parametrize("action,error", [("abstain", AbstainedError),
                                          ("escalate", EscalatedError)])
def test_raise_error_carries_the_decision(action: str, error: type[Exception],
                                          main_index: VectorStoreIndex) -> None:
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "actions": [{"type": action, "raise_error": True}]}})
    guard = Guard(policy, scorer=ScriptedScorer([0.9]), review_queue=RecordingReviewQueue())
    engine = GuardedQueryEngine(main_index.as_retriever(), guard,
                                llm=ScriptedLLM(answers=["maybe"]))
    with pytest.raises(GuardOutcome) as caught:
        engine.query("Which record does the archive hold?")
    assert type(caught.value) is error
    assert caught.value.decision.action == action
    assert caught.value.decision.chosen_answer == "maybe"


def test_answers_of_a_semgrad_llm_keep_their_exact_score(tiny_llm: SemGradLLM,
                                                         main_index: VectorStoreIndex,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The guard reads the score the LLM computed on the exact ids: nothing is re-scored,
    and the engine takes it from the call it made, not by matching the answer's text."""

    def no_text_matching(self: SemGradLLM, text: str) -> None:
        raise AssertionError("the engine looked its answer up by text")

    monkeypatch.setattr(SemGradLLM, "find_call", no_text_matching)
    scorer = ScriptedScorer([])  # would fail the attempt if the guard had to score
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1e9}, "actions": ["abstain"]}})
    engine = GuardedQueryEngine(main_index.as_retriever(similarity_top_k=2),
                                Guard(policy, scorer=scorer), llm=tiny_llm)
    response = as_response(engine.query("Which record does the archive hold?"))
    assert scorer.calls == []
    call = tiny_llm.last_call
    assert call is not None and call.score is not None
    assert meta(response)["guard_decision"]["action"] == "pass"
    assert response.response == call.text
    assert meta(response)["semgrad"]["value"] == call.score.value
    assert meta(response)["semgrad"]["retokenized"] is False
    read_back = score_from_response(response)
    assert read_back is not None and read_back.scores == call.score.scores


def test_a_policy_builds_its_guard_on_the_llm_scorer(tiny_llm: SemGradLLM,
                                                     main_index: VectorStoreIndex) -> None:
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.0}, "actions": ["abstain"]}})
    engine = GuardedQueryEngine.from_index(main_index, policy, llm=tiny_llm,
                                           similarity_top_k=1)
    assert engine.guard.scorer is tiny_llm.scorer
    response = as_response(engine.query("Which record does the archive hold?"))
    assert meta(response)["guard_decision"]["action"] == "abstain"
    call = tiny_llm.last_call
    assert call is not None and meta(response)["guard_decision"]["chosen_answer"] == call.text


@pytest.mark.asyncio
@pytest.mark.parametrize("twin", ["query", "aquery"])
async def test_a_streamed_answer_is_released_after_the_decision(
        twin: str, tiny_llm: SemGradLLM, main_index: VectorStoreIndex) -> None:
    """streaming=True: the model streams into a buffer while the guard scores and decides
    on the exact ids; a passed answer reaches the reader in the model's own pieces, an
    abstention as its one message."""

    async def pieces(max_score: float) -> tuple[list[str], dict[str, Any]]:
        policy = PolicyConfig.from_dict({"version": 1, "default": {
            "threshold": {"max_score": max_score},
            "actions": [{"type": "abstain", "message": "No idea."}]}})
        engine = GuardedQueryEngine.from_index(main_index, policy, llm=tiny_llm,
                                               similarity_top_k=1, streaming=True)
        if twin == "query":
            streamed = engine.query("Which record does the archive hold?")
            assert isinstance(streamed, StreamingResponse)
            return list(streamed.response_gen), streamed.metadata or {}
        astreamed = await engine.aquery("Which record does the archive hold?")
        assert isinstance(astreamed, AsyncStreamingResponse)
        return [p async for p in astreamed.async_response_gen()], astreamed.metadata or {}

    passed, metadata = await pieces(1e9)
    call = tiny_llm.last_call
    assert call is not None and call.score is not None
    assert metadata["guard_decision"]["action"] == "pass"
    assert "".join(passed) == call.text and len(passed) > 1
    assert metadata["semgrad"]["value"] == call.score.value
    assert metadata["semgrad"]["retokenized"] is False
    withheld, metadata = await pieces(0.0)
    assert withheld == ["No idea."]
    assert metadata["guard_decision"]["chosen_answer"] == tiny_llm.last_call.text  # type: ignore[union-attr]
