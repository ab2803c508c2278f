"""LangChain messages as chat-template messages, and the score in ``response_metadata``.

:class:`~langchain_semgrad_guard.ChatSemGrad` writes, in every answer's
``response_metadata``, the layout every semgrad-guard integration uses
(:mod:`semgrad_guard.scoring.metadata`):

- ``prompt_ids`` / ``response_ids``: the exact ids the model saw and produced;
- ``semgrad``: the score (:meth:`UncertaintyScore.to_dict` without the ids), or
  ``None`` with ``semgrad_error`` saying why it could not be computed.

:func:`score_from_metadata` and :func:`generation_from_metadata` read them back.

>>> from langchain_core.messages import HumanMessage, SystemMessage
>>> to_chat_messages([SystemMessage("Be brief."), HumanMessage("Hi")])
[{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from semgrad_guard.errors import ConfigError
from semgrad_guard.scoring.metadata import (
    SCORE_ERROR_KEY,
    SCORE_KEY,
    generation_from_metadata,
    score_from_metadata,
    score_metadata,
)

from .tool_calls import format_tool_call

__all__ = ["SCORE_ERROR_KEY", "SCORE_KEY", "answer_text", "generation_from_metadata",
           "json_args", "message_text", "score_from_metadata", "score_metadata",
           "to_chat_messages"]

_ROLES: dict[type[BaseMessage], str] = {
    SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant", ToolMessage: "tool",
}


def message_text(message: BaseMessage) -> str:
    """The text of a message (text blocks of a block list, joined)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def to_chat_messages(messages: Sequence[BaseMessage], *, native_tools: bool = False
                     ) -> list[dict[str, Any]]:
    """Chat-template messages for LangChain messages.

    An assistant turn's tool calls are written back in the model's own
    ``<tool_call>`` format, unless the template renders tool calls itself
    (``native_tools``), which then gets them as OpenAI-style ``tool_calls``.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = message.role
        else:
            role = next((r for t, r in _ROLES.items() if isinstance(message, t)), "")
        if not role:
            raise ConfigError(f"cannot put a {type(message).__name__} in a chat prompt")
        entry: dict[str, Any] = {"role": role, "content": message_text(message)}
        if isinstance(message, AIMessage) and message.tool_calls:
            if native_tools:
                entry["tool_calls"] = [
                    {"type": "function", "id": call.get("id"),
                     "function": {"name": call["name"], "arguments": call["args"]}}
                    for call in message.tool_calls]
            else:
                written = "".join(format_tool_call(c["name"], c["args"])
                                  for c in message.tool_calls)
                entry["content"] = "\n".join(p for p in (entry["content"], written) if p)
        if isinstance(message, ToolMessage) and native_tools:
            entry["tool_call_id"] = message.tool_call_id
        out.append(entry)
    return out


def answer_text(message: BaseMessage) -> str:
    """What a turn says, tool calls included: the text the model wrote for it."""
    text = message_text(message)
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        written = "".join(format_tool_call(c["name"], c["args"]) for c in calls)
        text = "\n".join(p for p in (text, written) if p)
    return text


def json_args(text: str) -> dict[str, Any] | None:
    """A JSON object read from text (a reviewer's edited tool arguments), else ``None``."""
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
