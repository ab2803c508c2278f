"""Structured output: an answer held to a schema by constrained decoding, then parsed.

:meth:`ChatSemGrad.with_structured_output <langchain_semgrad_guard.ChatSemGrad.with_structured_output>`
asks for JSON in one of three ways, as LangChain names them:

- ``"json_schema"`` (the default): the schema goes into the system message
  (:data:`DEFAULT_SCHEMA_PROMPT`) and generation is held to JSON valid under it;
- ``"function_calling"``: the schema becomes a tool that the model is made to call
  (``tool_choice`` naming it), and the call's arguments are held to the schema;
- ``"json_mode"``: generation is held to a JSON object; the prompt says which one.

A grammar cannot make a model finish: an answer cut off by ``max_tokens``, or one that
does not fit the schema, raises ``OutputParserException`` (with ``include_raw=True``
it comes back as ``parsing_error`` beside the raw message, which carries the score).

>>> from langchain_core.messages import AIMessage
>>> SchemaOutputParser().invoke(AIMessage('{"name": "Ada"}'))
{'name': 'Ada'}
>>> SchemaOutputParser().invoke(AIMessage('{"name": "Ad'))
Traceback (most recent call last):
...
langchain_core.exceptions.OutputParserException: the answer is not the JSON asked for (Unterminated string ...): '{"name": "Ad'
...
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.outputs import ChatGeneration, Generation

from .messages import message_text

#: How the JSON schema of a ``"json_schema"`` structured output is described to the
#: model (``{schema}`` receives the schema as JSON).
DEFAULT_SCHEMA_PROMPT = "Reply with only a JSON object that follows this JSON schema:\n{schema}"

METHODS = ("json_schema", "function_calling", "json_mode")


class SchemaOutputParser(BaseOutputParser[Any]):
    """Reads a structured answer: the JSON of the message's text, or the arguments of
    its call of ``tool_name``; validated into ``output_class`` when that is a pydantic class.

    Never returns ``None`` for a missing answer: it raises ``OutputParserException``
    naming what was wrong. It parses the whole answer, so a stream yields one object.
    """

    output_class: Any = None
    """A pydantic class (v2 or v1) to validate into; ``None`` returns the dict."""
    tool_name: str | None = None
    """Read the arguments of the first call of this tool instead of the text."""

    @property
    def _type(self) -> str:
        return "semgrad_schema"

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        generation = result[0]
        if isinstance(generation, ChatGeneration):
            message = generation.message
            text = message_text(message)
        else:
            message, text = AIMessage(generation.text), generation.text
        if self.tool_name is None:
            return self.parse(text)
        calls = [c for c in getattr(message, "tool_calls", None) or []
                 if c["name"] == self.tool_name]
        if not calls:
            reasons = [str(c.get("error")) for c in getattr(message, "invalid_tool_calls", [])]
            why = "; ".join(reasons) or f"it says {text!r}"
            raise OutputParserException(
                f"the answer holds no call of {self.tool_name!r}: {why}", llm_output=text)
        return self._validated(calls[0]["args"], text)

    def parse(self, text: str) -> Any:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputParserException(f"the answer is not the JSON asked for ({exc}): "
                                        f"{text!r}", llm_output=text) from exc
        return self._validated(data, text)

    def _validated(self, data: Any, text: str) -> Any:
        schema = self.output_class
        if schema is None:
            if not isinstance(data, dict):
                raise OutputParserException(f"the answer is not a JSON object: {text!r}",
                                            llm_output=text)
            return data
        try:
            if issubclass(schema, pydantic.BaseModel):
                return schema.model_validate(data)
            return schema.parse_obj(data)  # a pydantic.v1 model
        except (pydantic.ValidationError, pydantic.v1.ValidationError) as exc:
            raise OutputParserException(f"the answer does not fit {schema.__name__}: {exc}",
                                        llm_output=text) from exc
