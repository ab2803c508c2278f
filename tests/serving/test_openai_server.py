"""Generation on a real llama.cpp server, scoring here with the matching weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.errors import ServedModelMismatchError
from semgrad_guard.serving import check_served_model
from tests.core.tiny import tiny_local_model

pytestmark = pytest.mark.real_model

QUESTIONS = ["What is the capital of France?", "Who painted the Mona Lisa?",
             "What is the name of the third moon of Neptune?"]


@pytest.fixture(scope="module")
def server(served_default_model: str) -> str:
    return served_default_model


def chat_openai(url: str, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=url, api_key="unused", model="smollm2", temperature=0,
                      **kwargs)


def test_the_served_default_model_agrees_with_the_scorer(server: str,
                                                         default_scorer: SemGradScorer) -> None:
    from langchain_semgrad_guard import check_chat_model

    check = check_served_model(server, default_scorer)
    assert check.checks == {"tokenizer": "agrees", "chat_template": "agrees",
                            "first_token": "agrees"}
    assert check.complete and check.served_model == "smollm2"
    assert check_chat_model(chat_openai(server), default_scorer).complete


def test_another_tokenizer_is_refused(server: str) -> None:
    with pytest.raises(ServedModelMismatchError, match="tokenizer .* differs"):
        check_served_model(server, tiny_local_model())


def test_another_system_prompt_is_refused(server: str, default_lm: LocalModel) -> None:
    pirate = LocalModel(default_lm.model, default_lm.tokenizer, name=default_lm.name,
                        system_prompt="You are a pirate. Answer like one, always.")
    with pytest.raises(ServedModelMismatchError, match="prompt tokens"):
        check_served_model(server, pirate)


def test_another_template_of_the_same_length_is_refused(server: str,
                                                        default_lm: LocalModel) -> None:
    tokenizer = copy.deepcopy(default_lm.tokenizer)
    template = tokenizer.chat_template
    assert "a helpful AI assistant" in template
    tokenizer.chat_template = template.replace("a helpful AI assistant", "a useless AI robot")
    other = LocalModel(default_lm.model, tokenizer, name=default_lm.name)
    assert len(other.prompt_ids(qa_prompt("x"))) == len(default_lm.prompt_ids(qa_prompt("x")))
    with pytest.raises(ServedModelMismatchError, match="renders the probe conversation "
                                                       "differently"):
        check_served_model(server, other)


def test_served_answers_are_scored_from_the_servers_tokens(
        server: str, default_lm: LocalModel, default_scorer: SemGradScorer) -> None:
    from langchain_semgrad_guard import SemGradCallbackHandler

    handler = SemGradCallbackHandler(default_scorer)
    with_tokens = chat_openai(server, logprobs=True, top_logprobs=1)
    text_only = chat_openai(server)
    for llm in (with_tokens, text_only):
        llm.invoke(qa_prompt(QUESTIONS[1]).chat_messages(), config={"callbacks": [handler]})
    exact, fallback = handler.records
    assert exact.source == "server_tokens" and not exact.retokenized
    assert fallback.source == "retokenized" and fallback.retokenized
    assert exact.score is not None and fallback.score is not None
    assert default_lm.tokenizer.decode(exact.score.response_ids,
                                       skip_special_tokens=True) == exact.text
    # The same weights generate the same greedy answer here: the ids, and so the score,
    # are the ones generation here would have given.
    local = default_lm.generate(qa_prompt(QUESTIONS[1]), max_new_tokens=64)
    if local.response_ids == exact.score.response_ids:
        assert exact.value == pytest.approx(default_scorer.score_generation(local).value,
                                            rel=1e-4)


def test_a_guarded_chat_openai_chain_passes_abstains_and_escalates(
        server: str, default_scorer: SemGradScorer, tmp_path: Path) -> None:
    from langchain_core.runnables import RunnableLambda
    from langchain_semgrad_guard import guard_chain

    from semgrad_guard.review import open_review_queue
    from semgrad_guard.serving import ServedAnswer, score_served

    llm = chat_openai(server, logprobs=True, top_logprobs=1)
    chain = RunnableLambda(lambda q: qa_prompt(q).chat_messages()) | llm
    # The served answers' scores, measured once; the threshold falls between the most
    # confident answer and the two others.
    values = {}
    for question in QUESTIONS:
        reply = llm.invoke(qa_prompt(question).chat_messages())
        served = ServedAnswer.from_openai(reply.content, reply.response_metadata["logprobs"],
                                          reply.response_metadata["finish_reason"])
        values[question] = score_served(default_scorer, qa_prompt(question), served).value
    confident, doubtful, worst = sorted(QUESTIONS, key=values.__getitem__)
    threshold = (values[confident] + values[doubtful]) / 2
    policy = {"version": 1,
              "default": {"threshold": {"max_score": threshold}, "actions": ["abstain"]},
              "chains": [{"name": "support", "match": {"run_name": ["support"]},
                          "actions": [{"type": "escalate"}]}]}
    queue = open_review_queue(f"sqlite:///{tmp_path / 'review.db'}")
    faq = guard_chain(chain, policy, scorer=default_scorer, review_queue=queue, name="faq",
                      output="decision")
    support = guard_chain(chain, policy, scorer=default_scorer, review_queue=queue,
                          name="support", output="decision")

    passed = faq.invoke(confident)
    abstained = faq.invoke(doubtful)
    escalated = support.invoke(worst)

    assert [passed.action, abstained.action, escalated.action] == ["pass", "abstain",
                                                                   "escalate"]
    for decision, question in ((passed, confident), (abstained, doubtful),
                               (escalated, worst)):
        assert decision.score is not None and not decision.score.retokenized
        assert decision.value == pytest.approx(values[question], rel=1e-4)
    assert passed.answer == passed.chosen_answer != ""
    case = queue.get(escalated.case_id)
    assert case.question == worst and case.answer == escalated.chosen_answer
    queue.close()


@pytest.mark.usefixtures("closed_event_loop")
def test_llamaindex_openai_like_answers_are_scored_from_the_servers_tokens(
        server: str, default_scorer: SemGradScorer) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.llms.openai_like import OpenAILike
    from llama_index.llms.semgrad_guard import (
        GuardedQueryEngine,
        OfflineMiniLMEmbedding,
        UncertaintyEventHandler,
        check_llm,
    )

    from semgrad_guard.policy import Guard, PolicyConfig

    llm = OpenAILike(model="smollm2", api_base=server, api_key="unused", is_chat_model=True,
                     logprobs=True, temperature=0.0, max_tokens=48)
    assert check_llm(llm, default_scorer).complete
    index = VectorStoreIndex.from_documents(
        [Document(text="The Eiffel Tower is in Paris. It was completed in 1889.")],
        embed_model=OfflineMiniLMEmbedding())
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1.0}, "actions": ["abstain"]}})
    engine = GuardedQueryEngine.from_index(index, Guard(policy, scorer=default_scorer),
                                           llm=llm, chain_name="faq")
    handler = UncertaintyEventHandler(scorer=default_scorer).attach()
    try:
        response = engine.query("When was the Eiffel Tower completed?")
    finally:
        handler.detach()
    decision = response.metadata["guard_decision"]
    assert decision["action"] == "pass"
    score = response.metadata["semgrad"]
    assert score["retokenized"] is False
    # Scored against the prompt the LLM really got (LlamaIndex's system prompt included).
    [record] = [r for r in handler.records if r.kind == "chat"]
    assert record.retokenized is False and record.score == pytest.approx(score["value"])
