"""A LlamaIndex LLM for local Hugging Face models that scores every answer with SemGrad."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
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

from semgrad_guard import ConfigError, LocalModel, ScoringError, SemGradScorer
from semgrad_guard.model.prompts import Prompt

from .scores import ScoredCompletion


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

        A query engine's response holds only the answer's text; this finds the exact
        generation and score behind it.
        """
        wanted = text.strip()
        for call in reversed(self._calls):
            if call.text == wanted:
                return call
        return None

    # -- generation and scoring -------------------------------------------------------------------
    def _run(self, prompt: Prompt, kwargs: dict[str, Any], streamer: Any = None
             ) -> ScoredCompletion:
        options = {**self.generate_kwargs}
        if streamer is not None:
            options["streamer"] = streamer
        max_new = kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.max_new_tokens
        generation = self._model.generate(prompt, max_new_tokens=int(max_new), **options)
        try:
            score, error = self._scorer.score_generation(generation), None
        except ScoringError as exc:
            score, error = None, f"{type(exc).__name__}: {exc}"
        call = ScoredCompletion(prompt=prompt, generation=generation, score=score, error=error)
        self._calls.append(call)
        return call

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
        stream = _Stream(self, self._completion_prompt(prompt, formatted), kwargs)

        def gen() -> CompletionResponseGen:
            text = ""
            for delta in stream:
                text += delta
                yield CompletionResponse(text=text, delta=delta)
            yield self._completion(stream.result(), delta="")

        return gen()

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = _Stream(self, self._chat_prompt(messages), kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            for delta in stream:
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                                   delta=delta)
            yield self._chat(stream.result(), delta="")

        return gen()

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
        stream = _Stream(self, self._completion_prompt(prompt, formatted), kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for delta in stream.aiter():
                text += delta
                yield CompletionResponse(text=text, delta=delta)
            yield self._completion(await stream.aresult(), delta="")

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any
                           ) -> ChatResponseAsyncGen:
        stream = _Stream(self, self._chat_prompt(messages), kwargs)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for delta in stream.aiter():
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                                   delta=delta)
            yield self._chat(await stream.aresult(), delta="")

        return gen()


class _Stream:
    """Generation in a worker thread, its text read piece by piece; the worker scores the
    finished generation, so the score is ready when the text ends."""

    def __init__(self, llm: SemGradLLM, prompt: Prompt, kwargs: dict[str, Any]) -> None:
        from transformers import TextIteratorStreamer

        self._streamer = TextIteratorStreamer(llm.model.tokenizer, skip_prompt=True,
                                              skip_special_tokens=True)
        self._call: ScoredCompletion | None = None
        self._error: BaseException | None = None
        self._started = False
        self._thread = threading.Thread(target=self._work, args=(llm, prompt, kwargs),
                                        daemon=True)

    def _work(self, llm: SemGradLLM, prompt: Prompt, kwargs: dict[str, Any]) -> None:
        try:
            self._call = llm._run(prompt, kwargs, streamer=self._streamer)
        except BaseException as exc:  # re-raised in the reading thread by result()
            self._error = exc
            self._streamer.end()  # unblocks the reader

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _pieces(self) -> Iterator[str]:
        self._start()
        leading = True
        for piece in self._streamer:
            if leading:  # the finished text is stripped; so is the streamed one
                piece = piece.lstrip()
                leading = not piece
            if piece:
                yield piece

    def __iter__(self) -> Iterator[str]:
        return self._pieces()

    async def aiter(self) -> AsyncIterator[str]:
        pieces = self._pieces()
        while True:
            piece = await asyncio.to_thread(next, pieces, None)
            if piece is None:
                return
            yield piece

    def result(self) -> ScoredCompletion:
        self._start()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._call is None:  # pragma: no cover - the worker sets one or the other
            raise ScoringError("the streamed generation ended without a result")
        return self._call

    async def aresult(self) -> ScoredCompletion:
        return await asyncio.to_thread(self.result)
