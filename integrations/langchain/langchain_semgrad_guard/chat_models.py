"""``ChatSemGrad``: a LangChain chat model over a local Hugging Face causal LM that owns
generation, so it knows the exact ids of every answer and scores it with SemGrad."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, model_validator
from semgrad_guard import Generation, LocalModel, SemGradScorer, UncertaintyScore
from semgrad_guard.policy import Scorer
from semgrad_guard.scoring.metadata import answer_metadata, score_or_error

from .messages import to_chat_messages
from .tool_calls import (
    DEFAULT_TOOL_PROMPT,
    parse_tool_calls,
    render_tool_prompt,
    template_renders_tools,
)

_FINISH = {"eos": "stop", "stop_string": "stop", "length": "length"}


class ChatSemGrad(BaseChatModel):
    """A local Hugging Face chat model whose every answer carries its SemGrad score.

    The model generates the answer itself, so the score is computed on the exact ids
    the model saw and produced (no re-tokenisation). Each answer's
    ``response_metadata`` holds ``prompt_ids``, ``response_ids``, ``finish_reason`` and
    ``semgrad``: the score as a dict (higher = more uncertain), or ``None`` with
    ``semgrad_error`` saying why it could not be computed. Streaming yields the text as
    it is generated; the score arrives with the final chunk. ``ainvoke`` / ``astream``
    run generation and scoring in a worker thread, off the event loop.

    Tools (``bind_tools``) go to the chat template when it renders tools, else into the
    system message (``tool_prompt``); tool calls are read back from the model's
    ``<tool_call>{...}</tool_call>`` output as ``AIMessage.tool_calls``. Small models
    need ``tool_examples``: demonstration turns put before the conversation whenever
    tools are bound.

    >>> from semgrad_guard import LocalModel
    >>> chat = ChatSemGrad(model=LocalModel.load(), max_new_tokens=16)
    >>> answer = chat.invoke("What is the chemical symbol of gold? Answer in one word.")
    >>> answer.response_metadata["semgrad"]["direction"]
    'higher_is_more_uncertain'
    >>> answer.response_metadata["response_ids"][-1] == chat.model.tokenizer.eos_token_id
    True
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: LocalModel = Field(
        exclude=True, description="The local model (semgrad_guard.LocalModel) that generates.")
    scorer: Scorer | None = Field(
        default=None, exclude=True,
        description="Scores each answer (a SemGradScorer, or any object with "
                    "score_generation); built from `model` with `method` when not given.")
    method: str = Field(
        default="semgrad", description="The score `scorer` headlines when it is built here.")
    score_answers: bool = Field(
        default=True, description="Score every answer (False: ids only, no score).")
    max_new_tokens: int = Field(default=128, ge=1, description="Most tokens to generate.")
    do_sample: bool = Field(default=False, description="Sample instead of greedy decoding.")
    temperature: float | None = Field(
        default=None, gt=0.0, description="Sampling temperature (with do_sample).")
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Nucleus sampling mass (with do_sample).")
    tool_prompt: str = Field(
        default=DEFAULT_TOOL_PROMPT,
        description="System-message text describing the tools ({tools}) when the chat "
                    "template does not render them.")
    tool_examples: list[BaseMessage] = Field(
        default_factory=list,
        description="Demonstration turns (e.g. a HumanMessage and an AIMessage with "
                    "tool_calls) put before the conversation whenever tools are bound.")

    @model_validator(mode="after")
    def _build_scorer(self) -> ChatSemGrad:
        if self.scorer is None and self.score_answers:
            self.scorer = SemGradScorer(self.model, method=self.method)
        return self

    @classmethod
    def load(cls, name_or_path: str | None = None, **kwargs: Any) -> ChatSemGrad:
        """Load a local model (default: the offline SmolLM2-135M-Instruct) and wrap it.

        Keyword arguments are fields of this class.
        """
        return cls(model=LocalModel.load(name_or_path), **kwargs)

    # -- LangChain's identity ------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "semgrad-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model.name, "max_new_tokens": self.max_new_tokens,
                "do_sample": self.do_sample, "temperature": self.temperature,
                "top_p": self.top_p, "method": self.method,
                "score_answers": self.score_answers}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "huggingface"
        params["ls_model_name"] = self.model.name
        params["ls_max_tokens"] = self.max_new_tokens
        return params

    # -- tools ---------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, functions, pydantic classes or OpenAI dicts).

        ``tool_choice="none"`` keeps the tools out of the prompt; other choices are
        accepted and left to the model (a local model cannot be forced to call).
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    # -- generation ----------------------------------------------------------------------------
    def _prompt(self, messages: list[BaseMessage], tools: list[dict[str, Any]] | None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        native = template_renders_tools(self.model.tokenizer)
        demos = list(self.tool_examples) if tools else []
        system = [m for m in messages[:1] if m.type == "system"]
        rest = messages[len(system):]
        chat = to_chat_messages([*system, *demos, *rest], native_tools=native)
        if not tools or native:
            return chat, tools or None
        described = render_tool_prompt(tools, self.tool_prompt)
        if system:
            chat[0] = {**chat[0], "content": f"{chat[0]['content']}\n\n{described}"}
        else:
            chat.insert(0, {"role": "system", "content": described})
        return chat, None

    def _generate_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"max_new_tokens": int(kwargs.pop("max_new_tokens",
                                                               self.max_new_tokens))}
        if self.do_sample:
            out["do_sample"] = True
            if self.temperature is not None:
                out["temperature"] = self.temperature
            if self.top_p is not None:
                out["top_p"] = self.top_p
        if stop:
            out.update(stop_strings=list(stop), tokenizer=self.model.tokenizer)
        return out

    def _tools_of(self, kwargs: dict[str, Any]) -> list[dict[str, Any]] | None:
        tools = kwargs.pop("tools", None)
        if kwargs.pop("tool_choice", None) == "none":
            return None
        return list(tools) if tools else None

    def _score(self, generation: Generation) -> tuple[UncertaintyScore | None, str | None]:
        if not self.score_answers or self.scorer is None:
            return None, None
        return score_or_error(self.scorer, generation)

    def _answer(self, generation: Generation, text: str, tools: bool
                ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The message fields of one finished generation: content, tool-call fields,
        response metadata."""
        score, error = self._score(generation)
        calls: dict[str, Any] = {}
        finish = _FINISH[generation.stop_reason]
        content = text
        if tools:
            content, tool_calls, invalid = parse_tool_calls(text)
            calls = {"tool_calls": tool_calls, "invalid_tool_calls": invalid}
            if tool_calls:
                finish = "tool_calls"
        metadata: dict[str, Any] = {"model_name": self.model.name, "finish_reason": finish,
                                    **answer_metadata(generation, score, error)}
        return content, calls, metadata

    def _usage(self, generation: Generation) -> dict[str, int]:
        n_in, n_out = len(generation.prompt_ids), len(generation.response_ids)
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}

    def _finish_text(self, generation: Generation, stop: list[str] | None) -> str:
        text = generation.text
        for s in stop or ():
            if s and text.endswith(s):
                return text[: -len(s)].rstrip()
        return text

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = self._tools_of(kwargs)
        prompt, template_tools = self._prompt(messages, tools)
        generation = self.model.generate(prompt, tools=template_tools,
                                         **self._generate_kwargs(stop, kwargs))
        content, calls, metadata = self._answer(
            generation, self._finish_text(generation, stop), bool(tools))
        message = AIMessage(content=content, response_metadata=metadata,
                            usage_metadata=self._usage(generation), **calls)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Generation and the backward pass are CPU/GPU bound: a worker thread keeps
        # the event loop free.
        return await run_in_executor(None, self._generate, messages, stop,
                                     run_manager.get_sync() if run_manager else None, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tools = self._tools_of(kwargs)
        if tools:
            # A tool call is only readable once complete: one chunk, when it is.
            yield self._whole_as_chunk(messages, stop, tools, kwargs)
            return
        prompt, _ = self._prompt(messages, None)
        stream = self.model.stream(prompt, **self._generate_kwargs(stop, kwargs))
        emitted = ""
        for delta in stream:
            emitted += delta
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
            if run_manager:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            yield chunk
        generation = stream.result()
        text = self._finish_text(generation, stop)
        content, _, metadata = self._answer(generation, text, False)
        rest = content[len(emitted):] if content.startswith(emitted) else ""
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=rest, response_metadata=metadata, usage_metadata=self._usage(generation),  # type: ignore[arg-type]
            chunk_position="last"))

    def _whole_as_chunk(self, messages: list[BaseMessage], stop: list[str] | None,
                        tools: list[dict[str, Any]], kwargs: dict[str, Any]
                        ) -> ChatGenerationChunk:
        result = self._generate(messages, stop, tools=tools, **kwargs)
        message = cast(AIMessage, result.generations[0].message)
        chunks = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
                  for i, c in enumerate(message.tool_calls)]
        return ChatGenerationChunk(message=AIMessageChunk(
            content=message.content, response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata, tool_call_chunks=chunks,
            chunk_position="last"))

