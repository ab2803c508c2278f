"""``ChatSemGrad``: a LangChain chat model over a local Hugging Face causal LM that owns
generation, so it knows the exact ids of every answer and scores it with SemGrad."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator
from semgrad_guard import Generation, LocalModel, SemGradScorer, UncertaintyScore
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.constrained import Grammar
from semgrad_guard.model.streaming import GenerationStream
from semgrad_guard.policy import Scorer
from semgrad_guard.scoring.metadata import answer_metadata, generate_scored
from transformers import LogitsProcessorList

from .loading import shared_model
from .messages import to_chat_messages
from .structured_output import DEFAULT_SCHEMA_PROMPT, METHODS, SchemaOutputParser
from .tool_calls import (
    DEFAULT_TOOL_PROMPT,
    chosen_tools,
    parse_tool_calls,
    render_tool_prompt,
    template_renders_tools,
    tool_call_grammar,
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

    ``model`` is a ``LocalModel`` or its name (a local path, a hub id, or
    ``"SmolLM2-135M-Instruct"`` for the default model); a name is loaded once per process
    and shared (:mod:`langchain_semgrad_guard.loading`). LangChain's standard parameters
    mean what they mean for hosted models: ``temperature`` (0: greedy decoding, the
    default; above 0: sampling), ``max_tokens`` (= ``max_new_tokens``), ``stop``,
    ``timeout`` (seconds generation may run; the answer ends there with
    ``finish_reason="length"``) and ``streaming``. ``max_retries`` is accepted so that code
    written for hosted models runs, and changes nothing: a local model makes no network
    call that could fail and be retried.

    Tools (``bind_tools``) go to the chat template when it renders tools, else into the
    system message (``tool_prompt``); tool calls are read back from the model's
    ``<tool_call>{...}</tool_call>`` output as ``AIMessage.tool_calls``. ``tool_choice``
    is honoured by constrained decoding: ``"any"`` / ``"required"`` or a tool's name hold
    the answer to one call of those tools, its arguments to their schema. Small models
    need ``tool_examples`` (demonstration turns put before the conversation whenever
    tools are bound) to call tools of their own accord.

    ``with_structured_output`` holds the answer to the schema the same way (see
    :mod:`langchain_semgrad_guard.structured_output`); ``get_num_tokens`` counts with the
    model's own tokenizer, and ``get_num_tokens_from_messages`` counts the exact prompt
    the model would see. The model serialises (``dumpd`` / ``load``) by its name.

    >>> chat = ChatSemGrad(model="SmolLM2-135M-Instruct", max_tokens=16)
    >>> answer = chat.invoke("What is the chemical symbol of gold? Answer in one word.")
    >>> answer.response_metadata["semgrad"]["direction"]
    'higher_is_more_uncertain'
    >>> answer.response_metadata["response_ids"][-1] == chat.model.tokenizer.eos_token_id
    True
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid",
                              populate_by_name=True)

    model: LocalModel = Field(
        exclude=True,
        description="The local model (semgrad_guard.LocalModel) that generates, or its name "
                    "(a local path, a hub id, or 'SmolLM2-135M-Instruct' for the default).")
    scorer: Scorer | None = Field(
        default=None, exclude=True,
        description="Scores each answer (a SemGradScorer, or any object with "
                    "score_generation); built from `model` with `method` when not given.")
    method: str = Field(
        default="semgrad", description="The score `scorer` headlines when it is built here.")
    score_answers: bool = Field(
        default=True, description="Score every answer (False: ids only, no score).")
    fused: bool = Field(
        default=False,
        description="Score while generating (a SemGradScorer of `model`): the backward "
                    "pass runs right after the last token, with no second forward pass. "
                    "Off by default: the same scores up to float32 rounding (as close "
                    "as two passes), but on CPU about three times the cost of two passes "
                    "(0.69x of generation against 0.24x; see "
                    "SemGradScorer.generate_and_score).")
    max_new_tokens: int = Field(
        default=128, ge=1, validation_alias=AliasChoices("max_new_tokens", "max_tokens"),
        description="Most tokens to generate (also accepted as `max_tokens`).")
    temperature: float | None = Field(
        default=None, ge=0.0,
        description="0 or unset: greedy decoding; above 0: sampling at this temperature.")
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Nucleus sampling mass (implies sampling).")
    do_sample: bool | None = Field(
        default=None,
        description="Sample instead of greedy decoding; unset: sample when `temperature` "
                    "is above 0 or `top_p` is set.")
    stop: list[str] | None = Field(
        default=None, description="Strings that end the answer (not part of it).")
    timeout: float | None = Field(
        default=None, gt=0.0,
        description="Seconds generation may run; the answer ends there (finish_reason "
                    "'length').")
    max_retries: int | None = Field(
        default=None, ge=0,
        description="Accepted for code written for hosted models; a local model makes no "
                    "network call to retry, so it changes nothing.")
    streaming: bool = Field(
        default=False, description="invoke() streams internally (callbacks get tokens).")
    tool_prompt: str = Field(
        default=DEFAULT_TOOL_PROMPT,
        description="System-message text describing the tools ({tools}) when the chat "
                    "template does not render them.")
    tool_examples: list[BaseMessage] = Field(
        default_factory=list,
        description="Demonstration turns (e.g. a HumanMessage and an AIMessage with "
                    "tool_calls) put before the conversation whenever tools are bound.")
    schema_prompt: str = Field(
        default=DEFAULT_SCHEMA_PROMPT,
        description="System-message text describing the JSON schema ({schema}) of a "
                    "'json_schema' structured output.")

    @field_validator("model", mode="before")
    @classmethod
    def _named_model(cls, model: Any) -> Any:
        return shared_model(model) if isinstance(model, LocalModel | str) else model

    @model_validator(mode="after")
    def _build_scorer(self) -> ChatSemGrad:
        if self.do_sample and self.temperature == 0:
            raise ConfigError("temperature=0 is greedy decoding; do_sample=True needs a "
                              "temperature above 0 (or none)")
        if self.scorer is None and self.score_answers:
            self.scorer = SemGradScorer(self.model, method=self.method)
        return self

    @classmethod
    def load(cls, name_or_path: str | None = None, **kwargs: Any) -> ChatSemGrad:
        """Load a local model (default: the offline SmolLM2-135M-Instruct) and wrap it.

        Keyword arguments are fields of this class. A model already loaded under that
        name in this process is reused.
        """
        return cls(model=shared_model(name_or_path), **kwargs)

    # -- LangChain's identity ------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "semgrad-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model.name, "max_new_tokens": self.max_new_tokens,
                "do_sample": self._samples, "temperature": self.temperature,
                "top_p": self.top_p, "stop": self.stop, "timeout": self.timeout,
                "method": self.method, "score_answers": self.score_answers}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "huggingface"
        override = kwargs.get("model")
        params["ls_model_name"] = override if isinstance(override, str) else self.model.name
        params["ls_max_tokens"] = self._max_tokens(kwargs)
        return params

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_semgrad_guard", "chat_models"]

    @property
    def lc_attributes(self) -> dict[str, Any]:
        # The model is serialised by the name it is loaded again by.
        return {"model": self.model.name}

    # -- counting tokens -----------------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """The ids the model's own tokenizer gives ``text`` (no special tokens)."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage],
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool] | None = None,
    ) -> int:
        """The length of the exact prompt the model would see: chat template, the
        assistant header it answers after, and the tools (as ``bind_tools`` puts them)."""
        formatted = [convert_to_openai_tool(t) for t in tools] if tools else None
        prompt, template_tools = self._prompt(messages, formatted, None)
        return len(self.model.prompt_ids(prompt, template_tools))

    # -- tools and structured output -----------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, functions, pydantic classes or OpenAI dicts).

        ``tool_choice``: ``None`` / ``"auto"`` leave it to the model; ``"none"`` keeps
        the tools out of the prompt; ``"any"`` / ``"required"`` / ``True`` make the
        answer one call of one of the tools, and a tool's name (or ``{"type":
        "function", "function": {"name": ...}}``) one call of that tool: constrained
        decoding holds the answer to the call's format and the tool's parameter schema.
        A name that is not a bound tool raises ``ConfigError`` here.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            chosen_tools(formatted, tool_choice)  # a bad choice fails here, not at the call
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(  # type: ignore[override]
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """The model answering with an object of ``schema`` (a pydantic class, a
        TypedDict, a JSON schema or an OpenAI tool dict).

        ``method``: ``"json_schema"`` (the schema in the system message, the answer held
        to it), ``"function_calling"`` (a forced call of the schema as a tool) or
        ``"json_mode"`` (the answer held to a JSON object; the prompt describes it).
        A pydantic class comes back as an instance, anything else as a dict. An answer
        that does not parse (cut off by ``max_tokens``, or off the schema in
        ``json_mode``) raises ``OutputParserException``; with ``include_raw=True`` the
        result is ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`` and the raw
        message carries the score. ``strict`` is accepted: the grammar is strict either
        way.
        """
        if kwargs:
            raise ConfigError(f"with_structured_output takes no {sorted(kwargs)}")
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if schema is None and method != "json_mode":
            raise ConfigError(f"method {method!r} needs a schema (json_mode can go without)")
        pydantic_class = (schema if isinstance(schema, type) and is_basemodel_subclass(schema)
                          else None)
        traced = ({"ls_structured_output_format": {
            "kwargs": {"method": method, "strict": strict}, "schema": schema}}
            if schema is not None else {})
        llm: Runnable[LanguageModelInput, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(cast(Any, schema))["function"]["name"]
            llm = self.bind_tools([cast(Any, schema)], tool_choice=name, **traced)
            parser = SchemaOutputParser(output_class=pydantic_class, tool_name=name)
        else:
            response_format: dict[str, Any] = {"type": "json_object"}
            if method == "json_schema":
                response_format = {"type": "json_schema", "json_schema": {
                    "schema": convert_to_json_schema(cast(Any, schema))}}
            llm = self.bind(response_format=response_format, **traced)
            parser = SchemaOutputParser(output_class=pydantic_class)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser,
                                            parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed],
                                                            exception_key="parsing_error")

    # -- generation ----------------------------------------------------------------------------
    def _prompt(self, messages: list[BaseMessage], tools: list[dict[str, Any]] | None,
                response_format: dict[str, Any] | None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        native = template_renders_tools(self.model.tokenizer)
        demos = list(self.tool_examples) if tools else []
        system = [m for m in messages[:1] if m.type == "system"]
        rest = messages[len(system):]
        chat = to_chat_messages([*system, *demos, *rest], native_tools=native)
        described = []
        if tools and not native:
            described.append(render_tool_prompt(tools, self.tool_prompt))
        schema = _response_schema(response_format)
        if schema is not None:
            described.append(self.schema_prompt.format(schema=json.dumps(schema)))
        if described:
            text = "\n\n".join(described)
            if system:
                chat[0] = {**chat[0], "content": f"{chat[0]['content']}\n\n{text}"}
            else:
                chat.insert(0, {"role": "system", "content": text})
        return chat, (tools or None) if native else None

    @property
    def _samples(self) -> bool:
        if self.do_sample is not None:
            return self.do_sample
        return bool(self.temperature) or self.top_p is not None

    def _max_tokens(self, kwargs: dict[str, Any]) -> int:
        return int(kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens)))

    def _generate_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any],
                         grammar: Grammar | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"max_new_tokens": self._max_tokens(kwargs)}
        if self._samples:
            out["do_sample"] = True
            if self.temperature:
                out["temperature"] = self.temperature
            if self.top_p is not None:
                out["top_p"] = self.top_p
        if stop:
            out.update(stop_strings=list(stop), tokenizer=self.model.tokenizer)
        if self.timeout is not None:
            out["max_time"] = self.timeout
        if grammar is not None:
            out["logits_processor"] = LogitsProcessorList([grammar.logits_processor(
                self.model.tokenizer, self.model.eos_ids)])
        return out

    def _request(self, stop: list[str] | None, kwargs: dict[str, Any]
                 ) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None,
                            Grammar | None, list[str] | None]:
        """What a call asks for: the tools to show, the response format, the grammar
        the answer is held to, and the stop strings."""
        override = kwargs.get("model")
        if override is not None and override != self.model.name:
            raise ConfigError(f"this ChatSemGrad runs {self.model.name!r}; a call cannot switch "
                              f"to {override!r} (build a ChatSemGrad for that model)")
        tools = list(kwargs.get("tools") or []) or None
        forced = chosen_tools(tools, kwargs.get("tool_choice")) if tools else None
        if forced == []:  # tool_choice="none"
            tools, forced = None, None
        response_format = kwargs.get("response_format")
        grammar = None
        if forced:
            grammar = tool_call_grammar(forced)
        elif response_format is not None:
            grammar = Grammar.json_schema(_response_schema(response_format) or
                                          {"type": "object"})
        return tools, response_format, grammar, stop if stop is not None else self.stop

    def _generate_scored(self, prompt: list[dict[str, Any]], **generate_kwargs: Any
                         ) -> tuple[Generation, UncertaintyScore | None, str | None]:
        """One answer and its score (or why it has none): generated, then scored, or
        scored while generating when ``fused`` is on."""
        scorer = self.scorer if self.score_answers else None
        return generate_scored(self.model, scorer, prompt, fused=self.fused, **generate_kwargs)

    def _answer(self, generation: Generation, text: str, tools: bool,
                score: UncertaintyScore | None, error: str | None
                ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The message fields of one finished generation: content, tool-call fields,
        response metadata."""
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
        tools, response_format, grammar, stop = self._request(stop, kwargs)
        prompt, template_tools = self._prompt(messages, tools, response_format)
        generation, score, error = self._generate_scored(
            prompt, tools=template_tools, **self._generate_kwargs(stop, kwargs, grammar))
        content, calls, metadata = self._answer(
            generation, self._finish_text(generation, stop), bool(tools), score, error)
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
        tools, response_format, _, stop = self._request(stop, kwargs)
        if tools or response_format is not None:
            # A tool call or a structured answer is only readable once complete: one
            # chunk, when it is.
            yield self._whole_as_chunk(messages, stop, kwargs)
            return
        prompt, _ = self._prompt(messages, None, None)
        scored: list[tuple[UncertaintyScore | None, str | None]] = []

        def run(streamer: Any) -> Generation:
            generation, score, error = self._generate_scored(
                prompt, streamer=streamer, **self._generate_kwargs(stop, kwargs))
            scored.append((score, error))
            return generation

        stream = GenerationStream(self.model.tokenizer, run)
        emitted = ""
        for delta in stream:
            emitted += delta
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
            if run_manager:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            yield chunk
        generation = stream.result()
        text = self._finish_text(generation, stop)
        content, _, metadata = self._answer(generation, text, False, *scored[0])
        rest = content[len(emitted):] if content.startswith(emitted) else ""
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=rest, response_metadata=metadata, usage_metadata=self._usage(generation),  # type: ignore[arg-type]
            chunk_position="last"))

    def _whole_as_chunk(self, messages: list[BaseMessage], stop: list[str] | None,
                        kwargs: dict[str, Any]) -> ChatGenerationChunk:
        result = self._generate(messages, stop, **kwargs)
        message = cast(AIMessage, result.generations[0].message)
        chunks = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
                  for i, c in enumerate(message.tool_calls)]
        return ChatGenerationChunk(message=AIMessageChunk(
            content=message.content, response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata, tool_call_chunks=chunks,
            chunk_position="last"))


def _response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for (``None``: any JSON object).

    Takes OpenAI's shapes: ``{"type": "json_object"}`` and ``{"type": "json_schema",
    "json_schema": {"schema": {...}}}``.
    """
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" \
        else None
    if not isinstance(schema, dict):
        raise ConfigError("response_format must be {'type': 'json_object'} or {'type': "
                          f"'json_schema', 'json_schema': {{'schema': {{...}}}}}}, got "
                          f"{response_format!r}")
    return schema
