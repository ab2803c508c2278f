"""The guarded chain holds every shared guard scenario, through invoke, ainvoke, batch and
stream, on a real LCEL RAG chain (InMemoryVectorStore retriever, prompt, chat model)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import (
    ConfigurableField,
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnablePassthrough,
)
from langchain_core.vectorstores import InMemoryVectorStore
from semgrad_guard.errors import AbstainedError, ConfigError
from semgrad_guard.policy import AuditTrail, Guard, GuardDecision, PolicyConfig
from semgrad_guard.testing import ScriptedScorer, scripted_score
from tests.behaviours import SCENARIOS, Scenario

from langchain_semgrad_guard import ATTEMPT_KEY, GuardedChain, guard_chain, widen_retrieval

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer from the passages.\n{context}"), ("human", "{question}")])


class RagFixture:
    """A RAG chain whose n-th answer is scenario.answers[n], recording what each
    attempt retrieved (k, query, retriever)."""

    def __init__(self, answers: tuple[str, ...], chain_k: int = 4) -> None:
        store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
        store.add_texts([f"Passage {i} about France and its cities." for i in range(24)])
        dense = widen_retrieval(store.as_retriever(search_kwargs={"k": chain_k}))
        bm25: Runnable[Any, Any] = RunnableLambda(lambda query: [Document("A bm25 passage about Paris.")])
        self.retriever = dense.configurable_alternatives(
            ConfigurableField(id="retriever"), default_key="dense", bm25=bm25)
        self.seen: list[dict[str, Any]] = []
        self.llm = FakeListChatModel(responses=list(answers))

        def record(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
            attempt = config.get("configurable", {}).get(ATTEMPT_KEY, {})
            self.seen.append({"docs": len(inputs["context"]), "query": inputs["question"],
                              "retriever": config.get("configurable", {}).get("retriever"),
                              "attempt": attempt.get("number")})
            return {**inputs, "context": "\n".join(d.page_content for d in inputs["context"])}

        self.chain: Runnable[Any, str] = (
            {"context": self.retriever, "question": RunnablePassthrough()}
            | RunnableLambda(record) | PROMPT | self.llm | StrOutputParser())


def _guarded(scenario: Scenario, **options: Any) -> tuple[GuardedChain, RagFixture, Any]:
    rag = RagFixture(scenario.answers, chain_k=scenario.chain_k or 4)
    scorer = ScriptedScorer(scenario.scores)
    guard = Guard(PolicyConfig.from_dict(scenario.policy), scorer=scorer, audit=AuditTrail(),
                  review_queue=scenario.review_queue())
    return GuardedChain(rag.chain, guard, name="rag", **options), rag, scorer


def _check(scenario: Scenario, decision: GuardDecision, rag: RagFixture,
           scorer: ScriptedScorer, guard: Guard) -> None:
    expected = scenario.expected
    assert decision.action == expected.action
    assert decision.answer == expected.answer
    assert decision.passed is expected.passed
    assert decision.chosen_index == expected.best
    assert [r.attempt.k for r in decision.attempts] == expected.ks
    # The retriever really ran with each attempt's k (None: the chain's own).
    assert [s["docs"] for s in rag.seen if s["retriever"] != "bm25"] == [
        k or scenario.chain_k for k, r in zip(expected.ks, scenario.retrievers or
                                             [None] * len(expected.ks), strict=True)
        if r != "bm25"]
    if scenario.queries is not None:
        assert [s["query"] for s in rag.seen] == scenario.queries
    if scenario.retrievers is not None:
        assert [s["retriever"] for s in rag.seen] == scenario.retrievers
    for flag in scenario.flags:
        assert flag in decision.flags
    # Each attempt was scored on the chat model's own prompt and answer.
    assert [call[0] for call in scorer.calls] == ["text"] * expected.attempts
    assert scorer.calls[0][2] == scenario.answers[0]
    assert scorer.calls[0][1][-1] == {"role": "user", "content": scenario.question}
    assert (decision.case_id is not None) is expected.case
    records = guard.audit.records() if guard.audit is not None else []
    assert [(r.action, r.chain, r.case_id) for r in records] == [
        (expected.action, "default", decision.case_id)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_invoke_decides_every_scenario(scenario: Scenario) -> None:
    guarded, rag, scorer = _guarded(scenario, output="decision")
    decision = guarded.invoke(scenario.question)
    _check(scenario, decision, rag, scorer, guarded.guard)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.asyncio
async def test_ainvoke_decides_every_scenario(scenario: Scenario) -> None:
    guarded, rag, scorer = _guarded(scenario, output="decision")
    decision = await guarded.ainvoke(scenario.question)
    _check(scenario, decision, rag, scorer, guarded.guard)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_invoke_returns_the_decided_answer_as_the_chain_would(scenario: Scenario) -> None:
    guarded, _, _ = _guarded(scenario)
    assert guarded.invoke(scenario.question) == scenario.expected.answer


def test_stream_yields_the_decided_answer_once() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "retry_then_pass")
    guarded, _, _ = _guarded(scenario)
    assert list(guarded.stream(scenario.question)) == [scenario.expected.answer]


@pytest.mark.asyncio
async def test_astream_yields_the_decided_answer_once() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "abstain")
    guarded, _, _ = _guarded(scenario)
    assert [c async for c in guarded.astream(scenario.question)] == [scenario.expected.answer]


def test_batch_decides_each_input_and_audits_each() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5},
                                        "actions": [{"type": "abstain", "message": "No."}]}}
    chain: Runnable[Any, str] = RunnableLambda(lambda q: f"answer to {q}")
    scores = {"q-pass": 0.1, "q-abstain": 0.9}

    class ByQuestion(ScriptedScorer):
        def score_text(self, prompt: Any, response: str) -> Any:
            self.calls.append(("text", prompt, response))
            return scripted_score(scores[str(prompt)], retokenized=True)

    guarded = guard_chain(chain, policy, scorer=ByQuestion([]), name="faq")
    assert guarded.batch(["q-pass", "q-abstain"]) == ["answer to q-pass", "No."]
    records = guarded.guard.audit.records()  # type: ignore[union-attr]
    assert sorted((r.question, r.action) for r in records) == [
        ("q-abstain", "abstain"), ("q-pass", "pass")]


@pytest.mark.asyncio
async def test_abatch_decides_each_input() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5}}}
    guarded = guard_chain(RunnableLambda(lambda q: q.upper()), policy,
                          scorer=ScriptedScorer([0.1, 0.1]))
    assert await guarded.abatch(["a", "b"]) == ["A", "B"]


def test_message_output_keeps_its_type_and_carries_the_decision() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5}}}
    llm = FakeListChatModel(responses=["Paris"])
    guarded = guard_chain(llm, policy, scorer=ScriptedScorer([0.9]))
    out = guarded.invoke("What is the capital of France?")
    assert isinstance(out, AIMessage)
    assert out.content == "I am not confident enough in an answer to this question."
    assert out.response_metadata["guard_decision"]["action"] == "abstain"
    assert out.response_metadata["guard_decision"]["chosen_answer"] == "Paris"


def test_dict_output_gets_the_answer_under_its_key() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5}}}
    chain: Runnable[Any, Any] = RunnableLambda(lambda d: {"answer": "Paris", "sources": ["atlas"]})
    guarded = guard_chain(chain, policy, scorer=ScriptedScorer([0.2]))
    out = guarded.invoke({"question": "Capital of France?", "lang": "en"})
    assert out["answer"] == "Paris" and out["sources"] == ["atlas"]
    assert out["guard_decision"]["action"] == "pass"


def test_chain_factory_gets_each_attempt() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5}, "actions": [
        {"type": "retry_with_retrieval", "k_schedule": [8]}, "abstain"]}}
    built: list[int | None] = []

    def factory(attempt: Any) -> Runnable[Any, str]:
        built.append(attempt.k)
        return RunnableLambda(lambda q: f"{q} with k={attempt.k}")

    guarded = guard_chain(factory, policy, scorer=ScriptedScorer([0.9, 0.1]))
    assert guarded.invoke("q") == "q with k=8"
    assert built == [None, 8]


def test_chain_rule_is_chosen_by_run_name_and_tags() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5}},
              "chains": [{"name": "strict", "match": {"tags": ["legal"]},
                          "threshold": {"max_score": 0.05},
                          "actions": [{"type": "abstain", "raise_error": True}]}]}
    guarded = guard_chain(RunnableLambda(lambda q: "yes"), policy,
                          scorer=ScriptedScorer([0.1, 0.1]))
    assert guarded.invoke("q") == "yes"
    with pytest.raises(AbstainedError) as caught:
        guarded.invoke("q", config={"tags": ["legal"]})
    assert caught.value.decision.rule == "strict"


def test_bad_configuration_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="output"):
        guard_chain(RunnableLambda(lambda q: q), {"version": 1, "default": {
            "threshold": {"max_score": 0.5}}}, output="everything")
    with pytest.raises(ConfigError, match="unknown key"):
        guard_chain(RunnableLambda(lambda q: q), {"version": 1, "default": {
            "threshold": {"max_score": 0.5}, "retries": 3}})
    with pytest.raises(ConfigError, match="question"):
        guard_chain(RunnableLambda(lambda q: q), {"version": 1, "default": {
            "threshold": {"max_score": 0.5}}}, scorer=ScriptedScorer([])).invoke(
                {"a": "x", "b": "y"})
