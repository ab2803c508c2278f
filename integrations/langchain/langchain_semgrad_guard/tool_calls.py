"""Tools in the prompt and tool calls in the answer, in the Hermes / SmolLM2 format.

A chat template that knows tools (it reads the ``tools`` variable) renders them itself.
A template that does not (SmolLM2-135M-Instruct's, for one) gets them in the system
message, described by :data:`DEFAULT_TOOL_PROMPT`. Either way the model answers a tool
call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (a JSON list of
calls inside one tag is read too), which :func:`parse_tool_calls` turns into LangChain
tool calls.

>>> content, calls, invalid = parse_tool_calls(
...     'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
>>> content, calls[0]["name"], calls[0]["args"], invalid
('Sure.', 'get_weather', {'city': 'Paris'}, [])
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.messages.tool import invalid_tool_call, tool_call
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.constrained import Grammar

#: How tools are described to a model whose chat template does not render them.
#: ``{tools}`` receives one JSON function signature per line.
DEFAULT_TOOL_PROMPT = (
    "You can call these tools:\n<tools>\n{tools}\n</tools>\n"
    "To call a tool, reply with only <tool_call>{{\"name\": <tool name>, \"arguments\": "
    "<arguments as a JSON object>}}</tool_call>. If no tool is needed, answer in plain text."
)

_DECODER = json.JSONDecoder()
_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders the ``tools`` it is given."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, Mapping):  # named templates: look at all of them
        template = " ".join(str(t) for t in template.values())
    return "tools" in str(template)


def tool_signatures(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The function part of OpenAI-format tools (what the prompt shows the model)."""
    return [dict(t.get("function", t)) for t in tools]


def render_tool_prompt(tools: Sequence[Mapping[str, Any]], template: str = DEFAULT_TOOL_PROMPT
                       ) -> str:
    """The system-prompt text that describes ``tools`` (OpenAI format) to the model.

    >>> print(render_tool_prompt([{"type": "function", "function": {"name": "now"}}])[:49])
    You can call these tools:
    <tools>
    {"name": "now"}
    """
    lines = "\n".join(json.dumps(sig, ensure_ascii=False) for sig in tool_signatures(tools))
    return template.format(tools=lines)


def chosen_tools(tools: Sequence[Mapping[str, Any]], tool_choice: Any
                 ) -> list[Mapping[str, Any]] | None:
    """The tools a ``tool_choice`` makes the model call, ``[]`` for none, ``None`` when
    the model is free to call one or not.

    ``None`` / ``"auto"``: free; ``"none"``: no tool; ``"any"`` / ``"required"`` /
    ``True``: one of them; a tool's name (or ``{"type": "function", "function":
    {"name": ...}}``): that one.

    >>> tools = [{"type": "function", "function": {"name": "now"}},
    ...          {"type": "function", "function": {"name": "add"}}]
    >>> [t["function"]["name"] for t in chosen_tools(tools, "add")]
    ['add']
    >>> chosen_tools(tools, "auto") is None, chosen_tools(tools, "none")
    (True, [])
    >>> chosen_tools(tools, "mul")
    Traceback (most recent call last):
    ...
    semgrad_guard.errors.ConfigError: tool_choice names 'mul', which is not a bound tool (bound: now, add)
    """
    if tool_choice is None or tool_choice == "auto":
        return None
    if tool_choice == "none" or tool_choice is False:
        return []
    if tool_choice in ("any", "required") or tool_choice is True:
        return list(tools)
    name = tool_choice
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"tool_choice must be 'auto', 'none', 'any', 'required' or a tool's "
                          f"name, got {tool_choice!r}")
    signatures = tool_signatures(tools)
    chosen = [t for t, sig in zip(tools, signatures, strict=True) if sig.get("name") == name]
    if not chosen:
        bound = ", ".join(str(sig.get("name")) for sig in signatures)
        raise ConfigError(f"tool_choice names {name!r}, which is not a bound tool "
                          f"(bound: {bound})")
    return chosen


def tool_call_grammar(tools: Sequence[Mapping[str, Any]]) -> Grammar:
    """The grammar of one call of one of ``tools``, written as the model writes calls:
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, the arguments held to
    the tool's parameter schema.

    >>> from transformers import AutoTokenizer
    >>> from semgrad_guard.model import default_model_path
    >>> tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    >>> grammar = tool_call_grammar([{"type": "function", "function": {"name": "add",
    ...     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}},
    ...                    "required": ["a"]}}}])
    >>> grammar.matches(tokenizer, format_tool_call("add", {"a": 1}))
    True
    >>> grammar.matches(tokenizer, format_tool_call("add", {"a": "one"}))
    False
    """
    calls = [{"type": "object", "required": ["name", "arguments"],
              "additionalProperties": False,
              "properties": {"name": {"const": sig["name"]},
                             "arguments": sig.get("parameters") or {"type": "object"}}}
             for sig in tool_signatures(tools)]
    names = ", ".join(str(sig["name"]) for sig in tool_signatures(tools))
    return Grammar.lark('start: "<tool_call>" call "</tool_call>"\n'
                        f"call: {Grammar.json_rule({'anyOf': calls})}\n",
                        f"a call of one of the tools {names}")


def format_tool_call(name: str, args: Mapping[str, Any]) -> str:
    """One tool call as the model writes it (used to replay earlier turns).

    >>> format_tool_call("now", {})
    '<tool_call>{"name": "now", "arguments": {}}</tool_call>'
    """
    return ("<tool_call>" + json.dumps({"name": name, "arguments": dict(args)},
                                       ensure_ascii=False) + "</tool_call>")


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Split a model answer into its text and its tool calls.

    Returns ``(content, tool_calls, invalid_tool_calls)``: ``content`` is the text
    outside the ``<tool_call>`` tags; a call whose JSON cannot be read (for example an
    answer cut off by ``max_new_tokens``) becomes an invalid tool call carrying the raw
    text and the reason.

    >>> _, calls, invalid = parse_tool_calls('<tool_call>[{"name": "a", "arguments": {}}, '
    ...                                      '{"name": "b", "arguments": {"x": 1}}]</tool_call>')
    >>> [(c["name"], c["args"]) for c in calls], invalid
    ([('a', {}), ('b', {'x': 1})], [])
    >>> parse_tool_calls('<tool_call>{"name": "a", "argum')[2][0]["error"][:25]
    'tool call is not valid JS'
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for match in _CALL.finditer(text):
        raw = match.group(1).strip()
        try:
            # raw_decode: an answer cut off inside the closing tag still parses.
            payload, _ = _DECODER.raw_decode(raw)
        except json.JSONDecodeError as exc:
            invalid.append(invalid_tool_call(name=None, args=raw, id=_new_id(),
                                             error=f"tool call is not valid JSON: {exc}"))
            continue
        for item in payload if isinstance(payload, list) else [payload]:
            parsed = _one_call(item)
            if isinstance(parsed, str):
                invalid.append(invalid_tool_call(
                    name=item.get("name") if isinstance(item, dict) else None,
                    args=json.dumps(item, ensure_ascii=False), id=_new_id(), error=parsed))
            else:
                calls.append(parsed)
    content = _CALL.sub("", text).strip()
    return content, calls, invalid


def _one_call(item: Any) -> ToolCall | str:
    if not isinstance(item, dict):
        return f"a tool call must be a JSON object, got {type(item).__name__}"
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return "a tool call needs a 'name'"
    args: Any = item.get("arguments", item.get("parameters", item.get("args", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return f"the arguments of {name!r} are not a JSON object"
    if not isinstance(args, dict):
        return f"the arguments of {name!r} are not a JSON object"
    return tool_call(name=name, args=args, id=_new_id())
