"""SemGradLLM: every completion and chat answer carries its score, computed on the exact
ids of the generation, sync, async and streamed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.prompts import PromptTemplate
from llama_index.llms.semgrad_guard import (
    SCORE_ERROR_KEY,
    SCORE_KEY,
    SemGradLLM,
    score_from_response,
)
from llama_index.llms.semgrad_guard.base import recorded_calls

from semgrad_guard import ConfigError, LocalModel, SemGradScorer

QUESTION = "What is the chemical symbol of gold?"
MESSAGES = [ChatMessage(role=MessageRole.SYSTEM, content="Answer briefly."),
            ChatMessage(role=MessageRole.USER, content=QUESTION)]
MESSAGE_DICTS = [{"role": "system", "content": "Answer briefly."},
                 {"role": "user", "content": QUESTION}]


class ThreadRecorder:
    """A transformers streamer that notes which thread generation ran on."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def put(self, value: Any) -> None:
        self.threads.add(threading.get_ident())

    def end(self) -> None:
        self.threads.add(threading.get_ident())


def check_scored(response: Any, lm: LocalModel, prompt: Any) -> None:
    """The response carries a score of exactly the ids the model saw and produced."""
    call = response.raw
    extra = response.additional_kwargs
    assert SCORE_ERROR_KEY not in extra
    assert extra[SCORE_KEY]["value"] == call.score.value > 0
    assert extra[SCORE_KEY]["retokenized"] is False
    assert extra[SCORE_KEY]["direction"] == "higher_is_more_uncertain"
    assert extra["prompt_ids"] == list(lm.prompt_ids(prompt)) == list(call.generation.prompt_ids)
    assert extra["response_ids"] == list(call.generation.response_ids)
    assert extra["stop_reason"] == call.generation.stop_reason
    assert call.score.prompt_ids == call.generation.prompt_ids
    assert call.score.response_ids == call.generation.response_ids
    assert score_from_response(response) is call.score
    # Read back from the plain data alone, as after serialisation.
    assert score_from_response(response.model_copy(update={"raw": None})) == call.score


def unscored(chunk: Any) -> bool:
    return SCORE_KEY not in chunk.additional_kwargs


def test_metadata_describes_the_local_model(tiny_llm: SemGradLLM, tiny_lm: LocalModel) -> None:
    meta = tiny_llm.metadata
    assert meta.is_chat_model is True
    assert meta.model_name == "tiny-llama"
    assert meta.context_window == 2048
    assert meta.num_output == 6


def test_complete_scores_the_exact_generation(tiny_llm: SemGradLLM, tiny_lm: LocalModel
                                              ) -> None:
    response = tiny_llm.complete(QUESTION)
    check_scored(response, tiny_lm, QUESTION)
    assert response.text == response.raw.generation.text
    assert tiny_llm.last_call is response.raw
    assert tiny_llm.find_call(f"  {response.text} ") is response.raw


def test_chat_scores_the_chat_template_ids(tiny_llm: SemGradLLM, tiny_lm: LocalModel) -> None:
    response = tiny_llm.chat(MESSAGES)
    check_scored(response, tiny_lm, MESSAGE_DICTS)
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == response.raw.generation.text


def test_system_prompt_is_part_of_a_completion_prompt(tiny_lm: LocalModel) -> None:
    llm = SemGradLLM(tiny_lm, max_new_tokens=4, system_prompt="Answer briefly.")
    check_scored(llm.complete(QUESTION), tiny_lm, MESSAGE_DICTS)


def test_llama_index_predict_goes_through_chat(tiny_llm: SemGradLLM) -> None:
    answer = tiny_llm.predict(PromptTemplate("Question: {q}"), q=QUESTION)
    call = tiny_llm.find_call(answer)
    assert call is not None and call.score is not None
    assert call.prompt == [{"role": "user", "content": f"Question: {QUESTION}"}]


def test_stream_complete_puts_the_score_on_the_last_chunk(tiny_llm: SemGradLLM,
                                                          tiny_lm: LocalModel) -> None:
    chunks = list(tiny_llm.stream_complete(QUESTION, max_new_tokens=8))
    *pieces, last = chunks
    assert all(unscored(c) for c in pieces)
    check_scored(last, tiny_lm, QUESTION)
    assert last.delta == ""
    assert last.text == last.raw.generation.text
    assert "".join(c.delta for c in pieces).strip() == last.text
    assert len(last.raw.generation.response_ids) == 8  # the per-call max_new_tokens


def test_stream_chat_puts_the_score_on_the_last_chunk(tiny_llm: SemGradLLM,
                                                      tiny_lm: LocalModel) -> None:
    *pieces, last = list(tiny_llm.stream_chat(MESSAGES))
    check_scored(last, tiny_lm, MESSAGE_DICTS)
    assert last.message.content == "".join(c.delta for c in pieces).strip()
    assert all(unscored(c) for c in pieces)


def test_stream_scores_like_a_plain_call(tiny_llm: SemGradLLM) -> None:
    plain = tiny_llm.complete(QUESTION)
    streamed = list(tiny_llm.stream_complete(QUESTION))[-1]
    assert streamed.raw.generation.response_ids == plain.raw.generation.response_ids
    assert streamed.raw.score.value == pytest.approx(plain.raw.score.value, rel=1e-4)


def test_answers_scored_while_generated_equal_the_default_two_passes(tiny_lm: LocalModel
                                                                     ) -> None:
    fused = SemGradLLM(tiny_lm, max_new_tokens=6, fused=True).complete(QUESTION).raw
    assert "decode_with_graph" in fused.score.timings
    two_pass = SemGradLLM(tiny_lm, max_new_tokens=6).complete(QUESTION).raw
    assert "decode_with_graph" not in two_pass.score.timings  # two passes, by default
    assert fused.generation.response_ids == two_pass.generation.response_ids
    for name, value in two_pass.score.features.items():
        assert fused.score.features[name] == pytest.approx(value, rel=1e-4, abs=1e-9), name
    streamed = list(SemGradLLM(tiny_lm, max_new_tokens=6, fused=True)
                    .stream_complete(QUESTION))[-1].raw
    assert "decode_with_graph" in streamed.score.timings
    assert streamed.score.value == pytest.approx(two_pass.score.value, rel=1e-4)


@pytest.mark.asyncio
async def test_async_twins_score_off_the_event_loop(tiny_lm: LocalModel) -> None:
    recorder = ThreadRecorder()
    llm = SemGradLLM(tiny_lm, max_new_tokens=4, generate_kwargs={"streamer": recorder})
    completion = await llm.acomplete(QUESTION)
    check_scored(completion, tiny_lm, QUESTION)
    chat = await llm.achat(MESSAGES)
    check_scored(chat, tiny_lm, MESSAGE_DICTS)
    assert recorder.threads and threading.get_ident() not in recorder.threads


@pytest.mark.asyncio
async def test_async_streams_put_the_score_on_the_last_chunk(tiny_llm: SemGradLLM,
                                                             tiny_lm: LocalModel) -> None:
    chunks = [c async for c in await tiny_llm.astream_complete(QUESTION)]
    check_scored(chunks[-1], tiny_lm, QUESTION)
    assert all(unscored(c) for c in chunks[:-1])
    chats = [c async for c in await tiny_llm.astream_chat(MESSAGES)]
    check_scored(chats[-1], tiny_lm, MESSAGE_DICTS)
    assert chats[-1].message.content == "".join(c.delta or "" for c in chats).strip()


def test_an_answer_that_cannot_be_scored_is_returned_with_the_error(tiny_lm: LocalModel
                                                                    ) -> None:
    llm = SemGradLLM(tiny_lm, max_new_tokens=4)
    long_question = "Why? " * 1100  # over the tiny model's 2048-token window
    response = llm.complete(long_question)
    assert response.additional_kwargs[SCORE_KEY] is None
    assert response.additional_kwargs[SCORE_ERROR_KEY].startswith("ContextWindowError")
    assert score_from_response(response) is None
    assert response.raw.score is None and response.raw.generation.response_ids


def test_scorer_of_another_model_is_refused(tiny_lm: LocalModel, default_lm: LocalModel
                                            ) -> None:
    with pytest.raises(ConfigError, match="another model"):
        SemGradLLM(tiny_lm, scorer=SemGradScorer(default_lm))
    llm = SemGradLLM(scorer=SemGradScorer(tiny_lm))
    assert llm.model is tiny_lm


@pytest.mark.asyncio
async def test_each_context_records_its_own_answers(tiny_llm: SemGradLLM) -> None:
    """Concurrent queries each see the answers given in their own context, streamed ones
    included, even when the answers run in worker threads."""

    async def ask(question: str, stream: bool) -> tuple[Any, list[Any]]:
        with recorded_calls() as calls:
            if stream:
                response = [c async for c in await tiny_llm.astream_complete(question)][-1]
            else:
                response = await tiny_llm.acomplete(question)
        return response, calls

    (first, first_calls), (second, second_calls) = await asyncio.gather(
        ask(QUESTION, False), ask("Which city is the capital of France?", True))
    assert first_calls == [first.raw] and second_calls == [second.raw]
    with recorded_calls() as outer:
        with recorded_calls() as inner:
            tiny_llm.complete(QUESTION)
    assert len(outer) == len(inner) == 1 and outer[0] is inner[0]
