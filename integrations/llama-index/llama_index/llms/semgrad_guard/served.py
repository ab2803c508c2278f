"""Answers of an LLM served elsewhere (``OpenAILike`` on llama.cpp, vLLM, Ollama), scored
here with the matching Hugging Face weights.

Build the LLM with ``logprobs=True`` so that each response's ``raw`` reply carries the
server's tokens: the score then uses the exact response ids; without them the answer is
re-tokenised and flagged ``retokenized``. :func:`check_llm` checks once, at start-up,
that the server and the scorer hold the same model. :func:`recorded_llm_calls` collects
the LLM calls made inside a block (the prompt each call really sent, and its response),
so that a query engine scores the answer against its true prompt.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent

from semgrad_guard.serving import ServedAnswer, ServedModelCheck, check_served_model


def served_answer(response: Any) -> ServedAnswer | None:
    """The server's tokens for a chat or completion response of an OpenAI-compatible LLM
    (from its ``raw`` reply), or ``None`` when the server sent none.

    >>> from llama_index.core.llms import ChatMessage, ChatResponse
    >>> served_answer(ChatResponse(message=ChatMessage(role="assistant", content="Hi"))) is None
    True
    """
    raw = getattr(response, "raw", None)
    if raw is None:
        return None
    data = raw.model_dump() if hasattr(raw, "model_dump") else raw
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None
    logprobs, token_ids = choice.get("logprobs"), choice.get("token_ids")
    if isinstance(logprobs, dict) and logprobs.get("tokens") and not logprobs.get("content"):
        logprobs = [{"token": t} for t in logprobs["tokens"]]  # a completion's tokens
    if not logprobs and not token_ids:
        return None
    message = getattr(response, "message", None)
    text = getattr(message, "content", None) if message is not None else response.text
    return ServedAnswer.from_openai(str(text or ""), logprobs, choice.get("finish_reason"),
                                    token_ids)


def check_llm(llm: Any, scorer: Any) -> ServedModelCheck:
    """Check that the server behind an ``OpenAILike`` serves the scorer's model (same
    tokenizer, same chat template); raises
    :class:`~semgrad_guard.errors.ServedModelMismatchError` if not.

    >>> from llama_index.llms.openai_like import OpenAILike          # doctest: +SKIP
    >>> llm = OpenAILike(model="smollm2", api_base="http://127.0.0.1:8080/v1",
    ...                  api_key="none", is_chat_model=True, logprobs=True)  # doctest: +SKIP
    >>> check_llm(llm, scorer).checks["chat_template"]               # doctest: +SKIP
    'agrees'
    """
    return check_served_model(str(llm.api_base), scorer, api_key=llm.api_key or None,
                              model=getattr(llm, "model", None))


@dataclass(frozen=True)
class LLMCall:
    """One chat call seen inside :func:`recorded_llm_calls`."""

    messages: list[dict[str, Any]]
    response: Any


@dataclass
class _Recording:
    calls: list[LLMCall]
    prompts: dict[str, list[dict[str, Any]]]


_RECORDING: ContextVar[_Recording | None] = ContextVar("semgrad_llm_calls", default=None)


class _CallRecorder(BaseEventHandler):
    """Hands chat calls to the block that is recording in this context."""

    @classmethod
    def class_name(cls) -> str:
        return "SemGradCallRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        recording = _RECORDING.get()
        if recording is None or event.span_id is None:
            return
        if isinstance(event, LLMChatStartEvent):
            recording.prompts[event.span_id] = [
                {"role": m.role.value, "content": m.content or ""} for m in event.messages]
        elif isinstance(event, LLMChatEndEvent) and event.response is not None:
            messages = recording.prompts.pop(event.span_id, None)
            if messages is not None:
                recording.calls.append(LLMCall(messages, event.response))


_ATTACHED = threading.Lock()
_recorder: _CallRecorder | None = None


@contextlib.contextmanager
def recorded_llm_calls() -> Iterator[list[LLMCall]]:
    """The chat calls made in this block (and in tasks it starts), oldest first."""
    global _recorder
    with _ATTACHED:
        if _recorder is None:
            _recorder = _CallRecorder()
            get_dispatcher("root").add_event_handler(_recorder)
    recording = _Recording([], {})
    token = _RECORDING.set(recording)
    try:
        yield recording.calls
    finally:
        _RECORDING.reset(token)
