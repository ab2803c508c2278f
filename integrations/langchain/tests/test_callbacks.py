"""The callback handler intercepts and scores generations: exact scores from ChatSemGrad,
re-tokenised ones from langchain-huggingface models over the same transformers model;
strict mode stops the run with the score."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from semgrad_guard.errors import ConfigError, UncertainAnswerError
from semgrad_guard.policy import AuditTrail, PolicyConfig

from langchain_semgrad_guard import ChatSemGrad, SemGradCallbackHandler

pytestmark = pytest.mark.real_model

QUESTION = "What is the chemical symbol of gold? Answer in one word."


def test_chat_semgrad_answers_arrive_scored_and_are_recorded(chat: ChatSemGrad) -> None:
    handler = SemGradCallbackHandler(max_score=1.0, audit=AuditTrail())
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | chat | StrOutputParser()
    answer = chain.invoke({"q": QUESTION}, config={"callbacks": [handler]})
    [record] = handler.records
    assert record.text == answer and record.question == QUESTION
    assert record.source == "response_metadata" and record.retokenized is False
    assert record.passed is True and record.value is not None
    assert handler.audit is not None
    assert [r.action for r in handler.audit.records()] == ["pass"]


def test_unscored_answers_are_scored_from_their_exact_ids(chat: ChatSemGrad,
                                                         default_scorer: Any) -> None:
    unscored = ChatSemGrad(model=chat.model, score_answers=False, max_new_tokens=6)
    handler = SemGradCallbackHandler(default_scorer, max_score=1.0)
    reply = unscored.invoke(QUESTION, config={"callbacks": [handler]})
    assert reply.response_metadata["semgrad"] is None
    [record] = handler.records
    assert record.source == "exact_ids" and record.retokenized is False
    assert record.score is not None
    assert list(record.score.response_ids) == reply.response_metadata["response_ids"]


def test_strict_mode_raises_with_the_score(chat: ChatSemGrad) -> None:
    handler = SemGradCallbackHandler(max_score=1e-12, strict=True)
    assert handler.raise_error is True
    with pytest.raises(UncertainAnswerError) as caught:
        chat.invoke(QUESTION, config={"callbacks": [handler]})
    decision = caught.value.decision
    assert decision.action == "abstain" and decision.score is not None
    assert caught.value.score is decision.score
    assert decision.value == handler.records[0].value
    assert "over max_score 1e-12" in str(caught.value)


@pytest.mark.asyncio
async def test_strict_mode_raises_in_async_runs_and_follows_the_policy(chat: ChatSemGrad
                                                                        ) -> None:
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 10.0}, "score": "nll"},
        "chains": [{"name": "strict", "match": {"tags": ["strict"]},
                    "threshold": {"max_score": 1e-9}}]})
    handler = SemGradCallbackHandler(policy=policy, strict=True)
    await chat.ainvoke(QUESTION, config={"callbacks": [handler]})  # default rule: passes
    with pytest.raises(UncertainAnswerError) as caught:
        await chat.ainvoke(QUESTION, config={"callbacks": [handler], "tags": ["strict"]})
    assert caught.value.decision.rule == "strict"
    assert [r.method for r in handler.records] == ["nll", "nll"]


def test_strict_mode_needs_a_threshold() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        SemGradCallbackHandler(strict=True)


@pytest.fixture(scope="module")
def hf_pipeline(default_lm: Any) -> Any:
    from langchain_huggingface import HuggingFacePipeline
    from transformers import pipeline

    pipe = pipeline("text-generation", model=default_lm.model, tokenizer=default_lm.tokenizer,
                    max_new_tokens=12, do_sample=False)
    return HuggingFacePipeline(pipeline=pipe)


def test_huggingface_pipeline_answers_are_retokenised(hf_pipeline: Any) -> None:
    handler = SemGradCallbackHandler.for_pipeline(hf_pipeline, max_score=1.0)
    prompt = "The capital of France is"
    text = hf_pipeline.invoke(prompt, config={"callbacks": [handler]})
    [record] = handler.records
    assert record.error is None, record.error
    assert record.retokenized is True and record.source == "retokenized"
    assert record.score is not None
    tokenizer = hf_pipeline.pipeline.tokenizer
    assert list(record.score.prompt_ids) == list(tokenizer(prompt)["input_ids"])
    # The pipeline echoes the prompt; only the answer was scored.
    assert text.startswith(prompt)
    assert tokenizer.decode(list(record.score.response_ids)).strip() == \
        text[len(prompt):].strip()


def test_chat_huggingface_scores_match_chat_semgrad_on_the_same_model(
        hf_pipeline: Any, chat: ChatSemGrad, default_lm: Any) -> None:
    from langchain_huggingface import ChatHuggingFace

    model = ChatHuggingFace(llm=hf_pipeline, tokenizer=default_lm.tokenizer)
    handler = SemGradCallbackHandler.for_pipeline(model, max_score=1.0)
    model.invoke(QUESTION, config={"callbacks": [handler]})
    [record] = handler.records
    assert record.retokenized is True
    exact = chat.invoke(QUESTION)
    assert exact.content == record.text
    # Greedy answers ending on the end-of-turn token re-tokenise to the exact ids.
    if exact.response_metadata["stop_reason"] == "eos":
        assert record.value == pytest.approx(exact.response_metadata["semgrad"]["value"],
                                             rel=1e-4)
