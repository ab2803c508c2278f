"""GuardedQueryEngine: the shared guard scenarios (tests/behaviours.py) through a real
LlamaIndex retriever and response synthesizer, sync and async, and the shared policy file."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import Response
from llama_index.llms.semgrad_guard import GuardedQueryEngine, SemGradLLM, score_from_response

from semgrad_guard import AbstainedError, ConfigError, EscalatedError, GuardOutcome
from semgrad_guard.policy import AuditTrail, EscalateAction, Guard, PolicyConfig, load_policy
from semgrad_guard.testing import ScriptedScorer
from tests.behaviours import SCENARIOS, RecordingReviewQueue, Scenario

from .support import MAIN_PASSAGES, OTHER_PASSAGES, ScriptedLLM, as_response, meta

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


def check(scenario: Scenario, response: Response, llm: ScriptedLLM, scorer: ScriptedScorer,
          guard: Guard) -> None:
    expected = scenario.expected
    decision = meta(response)["guard_decision"]
    assert response.response == expected.answer
    assert decision["action"] == expected.action
    assert decision["passed"] is expected.passed
    assert decision["chosen_index"] == expected.best
    assert decision["chosen_answer"] == scenario.answers[expected.best]
    assert [a["k"] for a in decision["attempts"]] == expected.ks
    assert set(scenario.flags) <= set(decision["flags"])
    assert scorer.remaining == 0, "every scripted score is used, and no more"
    # Each attempt really ran: one LLM call each, over as many passages as the depth
    # the policy asked for (the chain's own k when it asked for none).
    assert len(llm.prompts) == expected.attempts
    retrievers = scenario.retrievers or [None] * expected.attempts
    for attempt, prompt, name in zip(decision["attempts"], llm.prompts, retrievers,
                                     strict=True):
        k = attempt["k"] or scenario.chain_k
        assert len(attempt["context"]) == k
        pool = OTHER_PASSAGES if name == "bm25" else MAIN_PASSAGES
        assert set(attempt["context"]) <= set(pool)
        assert attempt["query"] in prompt
        assert all(passage in prompt for passage in attempt["context"])
    if scenario.queries is not None:
        assert [a["query"] for a in decision["attempts"]] == scenario.queries
    # The answers were scored as text, against the question-answering prompt.
    assert all(call[0] == "text" for call in scorer.calls)
    chosen = decision["attempts"][expected.best]
    assert [n.node.get_content() for n in response.source_nodes] == chosen["context"]
    score = meta(response)["semgrad"]
    if isinstance(scenario.scores[expected.best], float):
        assert score["value"] == pytest.approx(scenario.scores[expected.best])
        assert score["retokenized"] is True
    else:
        assert score is None and "scripted scoring failure" in meta(response)["semgrad_error"]
    queue = guard.review_queue
    if expected.case:
        assert isinstance(queue, RecordingReviewQueue) and len(queue.cases) == 1
        assert decision["case_id"] == queue.cases[0].id
        assert queue.cases[0].fields["context"] == chosen["context"]
    else:
        assert decision["case_id"] is None
    assert guard.audit is not None
    assert [r.action for r in guard.audit.records()] == [expected.action]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_shared_scenario(scenario: Scenario, main_index: VectorStoreIndex,
                         other_index: VectorStoreIndex) -> None:
    engine, llm, scorer, guard = build(scenario, main_index, other_index)
    response = as_response(engine.query(scenario.question))
    check(scenario, response, llm, scorer, guard)


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_shared_scenario_async(scenario: Scenario, main_index: VectorStoreIndex,
                                     other_index: VectorStoreIndex) -> None:
    engine, llm, scorer, guard = build(scenario, main_index, other_index)
    response = as_response(await engine.aquery(scenario.question))
    check(scenario, response, llm, scorer, guard)


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
