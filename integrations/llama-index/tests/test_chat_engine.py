"""GuardedChatEngine: the shared guard scenarios (tests/behaviours.py) through LlamaIndex's
real chat engines, sync and async; every chat mode of ``index.as_chat_engine``; the
conversation keeps what the user was told."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import MessageRole
from llama_index.core.chat_engine import ContextChatEngine
from llama_index.core.chat_engine.types import AgentChatResponse
from llama_index.llms.semgrad_guard import GuardedChatEngine, SemGradLLM

from semgrad_guard import AbstainedError, ConfigError, GuardOutcome
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig, load_policy
from semgrad_guard.testing import ScriptedScorer
from tests.behaviours import ABSTAIN_MESSAGE, SCENARIOS, RecordingReviewQueue, Scenario

from .support import ScriptedLLM, check_scenario, meta
from .test_query_engine import SHARED_POLICY

QUESTION = "Which record does the archive hold?"


def _policy(max_score: float, *actions: Any) -> PolicyConfig:
    return PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": max_score},
        "actions": list(actions) or [{"type": "abstain", "message": ABSTAIN_MESSAGE}]}})


def build(scenario: Scenario, main_index: VectorStoreIndex, other_index: VectorStoreIndex
          ) -> tuple[GuardedChatEngine, ScriptedLLM, ScriptedScorer, Guard]:
    scorer = ScriptedScorer(scenario.scores)
    guard = Guard(PolicyConfig.from_dict(scenario.policy), scorer=scorer, audit=AuditTrail(),
                  review_queue=scenario.review_queue())
    llm = ScriptedLLM(answers=list(scenario.answers))
    chat = main_index.as_chat_engine(chat_mode="context", llm=llm,
                                     similarity_top_k=scenario.chain_k)
    engine = GuardedChatEngine(
        chat, guard,
        retrievers={"bm25": other_index.as_retriever(similarity_top_k=scenario.chain_k)})
    return engine, llm, scorer, guard


def check_conversation(engine: GuardedChatEngine, question: str, told: str) -> None:
    """The memory holds the question and what the user was told: no withheld answer,
    no retry."""
    history = engine.chat_history
    assert [(m.role, m.content) for m in history] == [(MessageRole.USER, question),
                                                      (MessageRole.ASSISTANT, told)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_shared_scenario(scenario: Scenario, main_index: VectorStoreIndex,
                         other_index: VectorStoreIndex) -> None:
    engine, llm, scorer, guard = build(scenario, main_index, other_index)
    response = engine.chat(scenario.question)
    assert isinstance(response, AgentChatResponse)
    check_scenario(scenario, response, llm, scorer, guard)
    check_conversation(engine, scenario.question, scenario.expected.answer)


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_shared_scenario_async(scenario: Scenario, main_index: VectorStoreIndex,
                                     other_index: VectorStoreIndex) -> None:
    engine, llm, scorer, guard = build(scenario, main_index, other_index)
    response = await engine.achat(scenario.question)
    check_scenario(scenario, response, llm, scorer, guard)
    check_conversation(engine, scenario.question, scenario.expected.answer)


@pytest.mark.parametrize("chat_mode", ["condense_plus_context", "context",
                                       "condense_question", "simple"])
def test_every_chat_mode_is_guarded_turn_after_turn(chat_mode: str,
                                                    main_index: VectorStoreIndex) -> None:
    """Two turns through a real chat engine of each mode: the second turn sees the first
    one's decided answer (an abstention replaced the uncertain one) and is judged on
    the answer of its last LLM call (a condensing call before it is not judged)."""
    # Turn 1: one answer (0.9: abstain). Turn 2: the condensing modes first rewrite the
    # question (an LLM call the guard does not judge), then answer (0.1: pass).
    condenses = chat_mode in ("condense_plus_context", "condense_question")
    answers = ["an uncertain guess", *(["What record is it?"] if condenses else []),
               "Record number 3."]
    llm = ScriptedLLM(answers=answers)
    scorer = ScriptedScorer([0.9, 0.1])
    guard = Guard(_policy(0.5), scorer=scorer, audit=AuditTrail())
    engine = GuardedChatEngine.from_index(main_index, guard, chat_mode=chat_mode, llm=llm,
                                          similarity_top_k=2)

    first = engine.chat(QUESTION)
    assert first.response == ABSTAIN_MESSAGE
    assert meta(first)["guard_decision"]["action"] == "abstain"
    assert meta(first)["uncertain"] is True
    check_conversation(engine, QUESTION, ABSTAIN_MESSAGE)

    second = engine.chat("And which one is it?")
    assert second.response == "Record number 3."
    assert meta(second)["guard_decision"]["action"] == "pass"
    assert meta(second)["uncertain"] is False
    assert scorer.remaining == 0 and [c[2] for c in scorer.calls] == [
        "an uncertain guess", "Record number 3."]
    # The withheld guess never reached the model again; what the user was told did.
    assert "an uncertain guess" not in llm.prompts[-1]
    assert ABSTAIN_MESSAGE in llm.prompts[1]
    assert [m.content for m in engine.chat_history] == [
        QUESTION, ABSTAIN_MESSAGE, "And which one is it?", "Record number 3."]
    if chat_mode != "simple":
        assert len(second.source_nodes) == 2
    assert [r.action for r in guard.audit.records()] == ["abstain", "pass"]  # type: ignore[union-attr]


def test_a_given_chat_history_starts_the_turn(main_index: VectorStoreIndex) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    llm = ScriptedLLM(answers=["Record number 3."])
    engine = GuardedChatEngine.from_index(
        main_index, Guard(_policy(0.5), scorer=ScriptedScorer([0.1])), chat_mode="context",
        llm=llm)
    history = [ChatMessage(role=MessageRole.USER, content="Hello"),
               ChatMessage(role=MessageRole.ASSISTANT, content="Hello! Ask me anything.")]
    engine.chat(QUESTION, chat_history=history)
    assert "Hello! Ask me anything." in llm.prompts[0]
    assert [m.content for m in engine.chat_history] == [
        "Hello", "Hello! Ask me anything.", QUESTION, "Record number 3."]
    engine.reset()
    assert engine.chat_history == []


def test_a_turn_that_raises_leaves_the_conversation_as_it_was(main_index: VectorStoreIndex
                                                               ) -> None:
    guard = Guard(_policy(0.5, {"type": "abstain", "raise_error": True}),
                  scorer=ScriptedScorer([0.1, 0.9]))
    engine = GuardedChatEngine.from_index(main_index, guard, chat_mode="context",
                                          llm=ScriptedLLM(answers=["Record 3.", "Maybe 7?"]))
    engine.chat(QUESTION)
    with pytest.raises(AbstainedError) as caught:
        engine.chat("Which other one?")
    assert isinstance(caught.value, GuardOutcome)
    assert caught.value.decision.chosen_answer == "Maybe 7?"
    assert [m.content for m in engine.chat_history] == [QUESTION, "Record 3."]


def test_answers_of_a_semgrad_llm_keep_their_exact_score(tiny_llm: SemGradLLM,
                                                         main_index: VectorStoreIndex) -> None:
    """The guard reads the score the LLM computed on the exact ids of its chat answer:
    nothing is re-scored."""
    scorer = ScriptedScorer([])  # would fail the turn if the guard had to score
    engine = GuardedChatEngine.from_index(main_index, Guard(_policy(1e9), scorer=scorer),
                                          llm=tiny_llm, similarity_top_k=1)
    response = engine.chat(QUESTION)
    call = tiny_llm.last_call
    assert call is not None and call.score is not None and scorer.calls == []
    assert response.response == call.text
    assert meta(response)["semgrad"]["value"] == call.score.value
    assert meta(response)["semgrad"]["retokenized"] is False


def test_a_policy_builds_its_guard_on_the_llm_scorer(tiny_llm: SemGradLLM,
                                                     main_index: VectorStoreIndex) -> None:
    engine = GuardedChatEngine.from_index(main_index, _policy(0.0), llm=tiny_llm,
                                          similarity_top_k=1)
    assert engine.guard.scorer is tiny_llm.scorer
    response = engine.chat(QUESTION)
    assert response.response == ABSTAIN_MESSAGE
    assert meta(response)["guard_decision"]["chosen_answer"] == tiny_llm.last_call.text  # type: ignore[union-attr]


def test_the_shared_policy_file_drives_the_chat_by_name(main_index: VectorStoreIndex,
                                                        other_index: VectorStoreIndex) -> None:
    queue = RecordingReviewQueue()
    guard = Guard(load_policy(SHARED_POLICY), scorer=ScriptedScorer([1.0, 0.9, 0.8]),
                  review_queue=queue)
    engine = GuardedChatEngine.from_index(
        main_index, guard, chat_mode="condense_plus_context", chain_name="rag",
        llm=ScriptedLLM(answers=["first", "second", "third"]), similarity_top_k=4,
        retrievers={"bm25": other_index.as_retriever(),
                    "dense-large": main_index.as_retriever()})
    response = engine.chat(QUESTION)
    decision = meta(response)["guard_decision"]
    assert decision["rule"] == "rag" and decision["action"] == "escalate"
    assert [(a["k"], a["retriever"]) for a in decision["attempts"]] == [
        (None, None), (8, "bm25"), (16, "dense-large")]
    assert [len(a["context"]) for a in decision["attempts"]] == [4, 8, 16]
    assert len(queue.cases) == 1 and decision["case_id"] == queue.cases[0].id


def test_misconfiguration_is_refused(main_index: VectorStoreIndex) -> None:
    guard = Guard(load_policy(SHARED_POLICY), scorer=ScriptedScorer([]),
                  review_queue=RecordingReviewQueue())
    with pytest.raises(ConfigError, match="'bm25'"):
        GuardedChatEngine.from_index(main_index, guard, chain_name="rag",
                                     llm=ScriptedLLM(answers=[]))
    with pytest.raises(ConfigError, match="retries with wider retrieval"):
        GuardedChatEngine.from_index(main_index, guard, chat_mode="simple", chain_name="rag",
                                     llm=ScriptedLLM(answers=[]),
                                     retrievers={"bm25": main_index.as_retriever(),
                                                 "dense-large": main_index.as_retriever()})
    with pytest.raises(ConfigError, match="chat_mode 'react'"):
        GuardedChatEngine.from_index(main_index, _policy(0.5), chat_mode="react",
                                     llm=ScriptedLLM(answers=[]))
    with pytest.raises(ConfigError, match="wraps a LlamaIndex chat engine"):
        GuardedChatEngine(main_index.as_query_engine(llm=ScriptedLLM(answers=[])),  # type: ignore[arg-type]
                          _policy(0.5))


def test_streaming_a_turn_is_refused_with_the_reason(main_index: VectorStoreIndex) -> None:
    chat = ContextChatEngine.from_defaults(main_index.as_retriever(),
                                           llm=ScriptedLLM(answers=["x"]))
    engine = GuardedChatEngine(chat, Guard(_policy(0.5), scorer=ScriptedScorer([])))
    with pytest.raises(ConfigError, match="decides on whole answers"):
        engine.stream_chat(QUESTION)
