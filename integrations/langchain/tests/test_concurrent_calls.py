"""Many calls at once on one ChatSemGrad (the real default model): batch and abatch with
max_concurrency=8, and a guarded chain's abatch, return what one call at a time returns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from semgrad_guard.policy import AuditTrail, Guard, GuardDecision, PolicyConfig

from langchain_semgrad_guard import ChatSemGrad, GuardedChain

pytestmark = pytest.mark.real_model

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?",
             "What is the chemical symbol of gold?", "How many legs does a spider have?",
             "What color is the sky on a clear day?", "What is 2 plus 3?",
             "Name a planet of the solar system.", "At what temperature does water boil?"]
CONCURRENCY = {"max_concurrency": 8}


def assert_same_answer(got: Any, want: Any) -> None:
    assert isinstance(got, AIMessage), got
    assert got.content == want.content
    meta, ref = got.response_metadata, want.response_metadata
    assert meta["prompt_ids"] == ref["prompt_ids"]
    assert meta["response_ids"] == ref["response_ids"]
    for key, value in ref["semgrad"]["scores"].items():
        assert meta["semgrad"]["scores"][key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


@pytest.fixture(scope="module")
def one_at_a_time(chat: ChatSemGrad) -> list[AIMessage]:
    return [chat.invoke(q) for q in QUESTIONS]  # type: ignore[misc]


def batched(chat: ChatSemGrad) -> tuple[int, int]:
    return chat.model.batcher.batches, chat.model.batcher.rows


def test_batch_with_eight_at_once_answers_as_one_at_a_time(
        chat: ChatSemGrad, one_at_a_time: list[AIMessage]) -> None:
    before = batched(chat)
    answers = chat.batch(QUESTIONS, config=CONCURRENCY)  # type: ignore[arg-type]
    for got, want in zip(answers, one_at_a_time, strict=True):
        assert_same_answer(got, want)
    batches, rows = (a - b for a, b in zip(batched(chat), before, strict=True))
    assert rows == 2 * len(QUESTIONS)  # each question generated once and scored once
    assert batches < rows  # and calls shared batches


def test_abatch_with_eight_at_once_answers_as_one_at_a_time(
        chat: ChatSemGrad, one_at_a_time: list[AIMessage]) -> None:
    before = batched(chat)
    answers = asyncio.run(chat.abatch(QUESTIONS, config=CONCURRENCY))  # type: ignore[arg-type]
    for got, want in zip(answers, one_at_a_time, strict=True):
        assert_same_answer(got, want)
    batches, rows = (a - b for a, b in zip(batched(chat), before, strict=True))
    assert batches < rows == 2 * len(QUESTIONS)


def test_a_guarded_chains_abatch_decides_as_one_at_a_time(
        chat: ChatSemGrad, one_at_a_time: list[AIMessage]) -> None:
    # A threshold between the answers' scores, so that both decisions occur.
    values = sorted(a.response_metadata["semgrad"]["value"] for a in one_at_a_time)
    threshold = (values[3] + values[4]) / 2
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": threshold}, "actions": ["abstain"]}})
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat
    guarded = GuardedChain(chain, Guard(policy, scorer=chat.scorer, audit=AuditTrail()),
                           output="decision")
    inputs = [{"question": q} for q in QUESTIONS]
    sequential = [guarded.invoke(i) for i in inputs]
    together = asyncio.run(guarded.abatch(inputs, config=CONCURRENCY))  # type: ignore[arg-type]
    assert {d.action for d in sequential} == {"pass", "abstain"}
    for got, want in zip(together, sequential, strict=True):
        assert isinstance(got, GuardDecision), got
        assert (got.action, got.answer, got.passed) == (want.action, want.answer, want.passed)
        assert got.score is not None and want.score is not None
        assert got.score.value == pytest.approx(want.score.value, rel=1e-4)
        assert got.score.response_ids == want.score.response_ids
