"""A LlamaIndex LLM for local Hugging Face models that scores every answer with SemGrad."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM

from semgrad_guard import ConfigError, Generation, LocalModel, SemGradScorer, UncertaintyScore
from semgrad_guard.model.prompts import Prompt
from semgrad_guard.model.streaming import GenerationStream
from semgrad_guard.scoring.metadata import generate_scored

from .scores import ScoredCompletion

# The lists of answers being recorded in this context (see recorded_calls).
_RECORDING: ContextVar[tuple[list[ScoredCompletion], ...]] = ContextVar(
    "semgrad_recorded_calls", default=())


@contextmanager
def recorded_calls() -> Iterator[list[ScoredCompletion]]:
    """Collect the scored answers every :class:`SemGradLLM` gives inside this block, in
    the order they finish.

    The recording follows the context (as ``contextvars`` do): work the block runs in
    worker threads (``asyncio.to_thread``) and tasks is recorded; concurrent queries in
    other contexts are not.

    >>> llm = SemGradLLM(max_new_tokens=8)
    >>> with recorded_calls() as calls:
    ...     response = llm.complete("What is the chemical symbol of gold?")
    >>> [call is response.raw for call in calls]
    [True]
    """
    token, calls = start_recording()
    try:
        yield calls
    finally:
        stop_recording(token)


def start_recording() -> tuple[Token[tuple[list[ScoredCompletion], ...]], list[ScoredCompletion]]:
    """Start recording scored answers in this context (:func:`recorded_calls` without a
    ``with`` block); returns what :func:`stop_recording` needs, and the list."""
    calls: list[ScoredCompletion] = []
    return _RECORDING.set((*_RECORDING.get(), calls)), calls


def stop_recording(token: Token[Any]) -> None:
    """Stop the recording :func:`start_recording` started (in the same context)."""
    try:
        _RECORDING.reset(token)
    except ValueError:  # another context: that context's recording ends with it
        pass


class SemGradLLM(LLM):
    """A local Hugging Face causal LM whose every completion and chat answer carries its
    SemGrad uncertainty score (**higher = more uncertain**).

    The model generates, and the score is computed on the exact prompt and response ids
    of that generation (never re-tokenised). Each response carries the score twice:
    ``response.additional_kwargs`` holds plain data, laid out as the LangChain
    integration's ``response_metadata`` (``semgrad``: the score without its ids;
    ``prompt_ids``, ``response_ids``, ``stop_reason``), and ``response.raw`` is the
    :class:`ScoredCompletion` (the :class:`Generation` and the
    :class:`UncertaintyScore`). A streamed answer carries them on its last chunk. The
    async methods run generation and scoring in a worker thread, off the event loop.

    An answer that cannot be scored (e.g. over the context window) is still returned,
    with ``semgrad`` ``None`` and ``semgrad_error`` saying why, so that the policy's
    failure mode decides.

    >>> from llama_index.llms.semgrad_guard import SemGradLLM, score_from_response
    >>> llm = SemGradLLM(max_new_tokens=16)          # the offline default model
    >>> response = llm.complete("What is the chemical symbol of gold?")
    >>> response.additional_kwargs["semgrad"]["value"] > 0
    True
    >>> score_from_response(response).response_ids == response.raw.generation.response_ids
    True
    """

    model_name: str = Field(description="The local model's name or path.")
    max_new_tokens: int = Field(
        default=256, gt=0, description="Most tokens generated per answer (per call: "
                                       "max_new_tokens=...).")
    context_window: int = Field(
        default=DEFAULT_CONTEXT_WINDOW, gt=0,
        description="Tokens the model can take in, prompt and answer together.")
    generate_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for model.generate (greedy decoding unless "
                    "do_sample=True is given here).")
    fused: bool = Field(
        default=False,
        description="Score while generating: the backward pass runs right after the last "
                    "token, with no second forward pass. Off by default: the same scores "
                    "up to float32 rounding (as close as two passes), but on CPU about "
                    "three times the cost of two passes (0.69x of generation against "
                    "0.24x; see SemGradScorer.generate_and_score).")
    history: int = Field(
        default=64, ge=1,
        description="How many recent scored answers the LLM keeps for find_call().")

    _model: LocalModel = PrivateAttr()
    _scorer: SemGradScorer = PrivateAttr()
    _calls: deque[ScoredCompletion] = PrivateAttr()

    def __init__(self, model: LocalModel | None = None, *, scorer: SemGradScorer | None = None,
                 **kwargs: Any) -> None:
        if model is None:
            model = scorer.model if scorer is not None else LocalModel.load()
        if scorer is None:
            scorer = SemGradScorer(model)
        elif scorer.model is not model:
            raise ConfigError("the scorer scores another model than the one given; pass "
                              "SemGradLLM(scorer=scorer) alone, or a scorer built on model")
        kwargs.setdefault("model_name", model.name)
        window = model.layout.context_window
        if window is not None:
            kwargs.setdefault("context_window", int(window))
        super().__init__(**kwargs)
        self._model = model
        self._scorer = scorer
        self._calls = deque(maxlen=self.history)
        from .instrumentation import ensure_instrumented

        ensure_instrumented()

    @classmethod
    def load(cls, name_or_path: str | None = None, *, prompt_format: str = "auto",
             system_prompt: str | None = None, scorer_kwargs: dict[str, Any] | None = None,
             **kwargs: Any) -> SemGradLLM:
        """Load a local model (``None``: the offline default) and wrap it.

        >>> llm = SemGradLLM.load(max_new_tokens=16)
        >>> llm.metadata.is_chat_model
        True
        """
        model = LocalModel.load(name_or_path, prompt_format=prompt_format,
                                system_prompt=system_prompt)
        return cls(model, scorer=SemGradScorer(model, **(scorer_kwargs or {})), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "SemGradLLM"

    @property
    def model(self) -> LocalModel:
        """The local model that generates."""
        return self._model

    @property
    def scorer(self) -> SemGradScorer:
        """The scorer of every answer (share it with a Guard or an evaluator)."""
        return self._scorer

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=self.max_new_tokens,
            is_chat_model=self._model.prompt_format.kind == "chat", model_name=self.model_name)

    # -- the answers this LLM has scored -----------------------------------------------------
    @property
    def calls(self) -> list[ScoredCompletion]:
        """The recent scored answers, oldest first (at most ``history`` of them)."""
        return list(self._calls)

    @property
    def last_call(self) -> ScoredCompletion | None:
        """The most recent scored answer, if any."""
        return self._calls[-1] if self._calls else None

    def find_call(self, text: str) -> ScoredCompletion | None:
        """The most recent answer whose text is ``text`` (whitespace aside), if kept.

        An evaluator is given only the answer's text; this finds the exact generation and
        score behind it. (Code that runs the LLM itself records its answers with
        :func:`recorded_calls` instead.)
        """
        wanted = text.strip()
        for call in reversed(self._calls):
            if call.text == wanted:
                return call
        return None

    # -- generation and scoring -------------------------------------------------------------------
    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        max_new = kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.max_new_tokens
        return {**self.generate_kwargs, "max_new_tokens": int(max_new)}

    def _record(self, prompt: Prompt, generation: Generation, score: UncertaintyScore | None,
                error: str | None) -> ScoredCompletion:
        call = ScoredCompletion(prompt=prompt, generation=generation, score=score, error=error)
        self._calls.append(call)
        for recording in _RECORDING.get():
            recording.append(call)
        return call

    def _generate_scored(self, prompt: Prompt, kwargs: dict[str, Any], streamer: Any = None
                         ) -> tuple[Generation, UncertaintyScore | None, str | None]:
        """Generate and score one answer (while generating when ``fused`` is on)."""
        options = self._options(kwargs)
        if streamer is not None:
            options["streamer"] = streamer
        return generate_scored(self._model, self._scorer, prompt, fused=self.fused, **options)

    def _run(self, prompt: Prompt, kwargs: dict[str, Any]) -> ScoredCompletion:
        return self._record(prompt, *self._generate_scored(prompt, kwargs))

    def _stream(self, prompt: Prompt, kwargs: dict[str, Any], chat: bool
                ) -> Generator[Any, None, None]:
        """The responses of an answer while it is generated (the text so far and the new
        piece), then the scored answer (with an empty delta)."""
        kwargs = {k: v for k, v in kwargs.items() if k != "streamer"}  # the stream's own
        scored: list[tuple[UncertaintyScore | None, str | None]] = []

        def run(streamer: Any) -> Generation:
            generation, score, error = self._generate_scored(prompt, kwargs, streamer)
            scored.append((score, error))
            return generation

        stream = GenerationStream(self._model.tokenizer, run)
        text = ""
        for delta in stream:
            text += delta
            yield (ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                                delta=delta) if chat else CompletionResponse(text=text,
                                                                             delta=delta))
        # Recorded here, in the reader's context (the worker thread has none).
        call = self._record(prompt, stream.result(), *scored[0])
        yield self._chat(call, delta="") if chat else self._completion(call, delta="")

    async def _astream(self, prompt: Prompt, kwargs: dict[str, Any], chat: bool
                       ) -> AsyncGenerator[Any, None]:
        responses = self._stream(prompt, kwargs, chat)
        # Generation and scoring are CPU/GPU bound: each step runs off the event loop.
        while (response := await asyncio.to_thread(next, responses, None)) is not None:
            yield response

    def _completion_prompt(self, prompt: str, formatted: bool) -> Prompt:
        if not formatted and self.completion_to_prompt is not None:
            prompt = self.completion_to_prompt(prompt)
        if self.system_prompt:
            return [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": prompt}]
        return prompt

    @staticmethod
    def _chat_prompt(messages: Sequence[ChatMessage]) -> Prompt:
        return [{"role": m.role.value, "content": m.content or ""} for m in messages]

    @staticmethod
    def _completion(call: ScoredCompletion, delta: str | None = None) -> CompletionResponse:
        return CompletionResponse(text=call.text, delta=delta, raw=call,
                                  additional_kwargs=call.metadata())

    @staticmethod
    def _chat(call: ScoredCompletion, delta: str | None = None) -> ChatResponse:
        message = ChatMessage(role=MessageRole.ASSISTANT, content=call.text)
        return ChatResponse(message=message, delta=delta, raw=call,
                            additional_kwargs=call.metadata())

    # -- sync ---------------------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._completion(self._run(self._completion_prompt(prompt, formatted), kwargs))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(self._run(self._chat_prompt(messages), kwargs))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any
                        ) -> CompletionResponseGen:
        return self._stream(self._completion_prompt(prompt, formatted), kwargs, chat=False)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream(self._chat_prompt(messages), kwargs, chat=True)

    # -- async: the same work in a worker thread ------------------------------------------------------
    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any
                        ) -> CompletionResponse:
        call = await asyncio.to_thread(self._run, self._completion_prompt(prompt, formatted),
                                       kwargs)
        return self._completion(call)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(await asyncio.to_thread(self._run, self._chat_prompt(messages), kwargs))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any
                               ) -> CompletionResponseAsyncGen:
        return self._astream(self._completion_prompt(prompt, formatted), kwargs, chat=False)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any
                           ) -> ChatResponseAsyncGen:
        return self._astream(self._chat_prompt(messages), kwargs, chat=True)
