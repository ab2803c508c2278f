"""Structured output and tool_choice on the real default model: the answer is held to
the schema by constrained decoding, parses, carries its score, and an answer that cannot
parse raises OutputParserException (never None)."""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from semgrad_guard import ConfigError
from typing_extensions import TypedDict

from langchain_semgrad_guard import ChatSemGrad

pytestmark = pytest.mark.real_model

QUESTION = "Is Paris the capital of France?"


class Verdict(BaseModel):
    """A yes-or-no answer."""

    answer: Literal["yes", "no"] = Field(description="yes or no")


class VerdictDict(TypedDict):
    """A yes-or-no answer."""

    answer: Literal["yes", "no"]


@pytest.fixture(scope="module")
def model(chat: ChatSemGrad) -> ChatSemGrad:
    return ChatSemGrad(model=chat.model, scorer=chat.scorer, max_tokens=24)


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_comes_back_parsed_with_the_score_beside_it(
        model: ChatSemGrad, method: str) -> None:
    question = QUESTION + (' Reply in JSON with the key "answer".' if method == "json_mode"
                           else "")
    result = model.with_structured_output(Verdict, method=method, include_raw=True).invoke(
        question)
    raw = result["raw"]
    assert isinstance(raw, AIMessage) and raw.response_metadata["semgrad"] is not None
    if method == "json_mode" and result["parsing_error"] is not None:
        # json_mode holds the answer to a JSON object only; the prompt asks for the keys.
        assert isinstance(result["parsing_error"], OutputParserException)
        return
    assert result["parsing_error"] is None, raw
    assert isinstance(result["parsed"], Verdict)
    if method == "json_schema":
        prompt = model.model.tokenizer.decode(raw.response_metadata["prompt_ids"])
        assert '"answer"' in prompt  # the schema was described to the model
    if method == "function_calling":
        assert raw.tool_calls[0]["name"] == "Verdict"


def test_dict_schemas_come_back_as_dicts_and_stream_once(model: ChatSemGrad) -> None:
    structured = model.with_structured_output(VerdictDict)
    assert structured.invoke(QUESTION) in ({"answer": "yes"}, {"answer": "no"})
    chunks = list(structured.stream(QUESTION))
    assert len(chunks) == 1 and chunks[0]["answer"] in ("yes", "no")


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_an_answer_cut_short_raises_instead_of_returning_none(chat: ChatSemGrad,
                                                              method: str) -> None:
    short = ChatSemGrad(model=chat.model, scorer=chat.scorer, max_tokens=3)
    structured = short.with_structured_output(Verdict, method=method)
    with pytest.raises(OutputParserException):
        structured.invoke(QUESTION)
    with pytest.raises(OutputParserException):
        list(structured.stream(QUESTION))
    raw = short.with_structured_output(Verdict, method=method, include_raw=True).invoke(
        QUESTION)
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)


def test_bad_structured_output_requests_are_refused(model: ChatSemGrad) -> None:
    with pytest.raises(ConfigError, match="method must be one of"):
        model.with_structured_output(Verdict, method="xml")
    with pytest.raises(ConfigError, match="needs a schema"):
        model.with_structured_output(None)
    with pytest.raises(ConfigError, match="response_format must be"):
        model.invoke(QUESTION, response_format={"type": "yaml"})


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return "sunny"


@tool
def set_unit(unit: Literal["celsius", "fahrenheit"]) -> str:
    """Set the temperature unit of later answers."""
    return unit


def test_tool_choice_makes_the_model_call_the_named_tool(model: ChatSemGrad) -> None:
    for choice in ("set_unit", {"type": "function", "function": {"name": "set_unit"}}):
        reply = model.bind_tools([get_weather, set_unit], tool_choice=choice).invoke("Hello!")
        assert [c["name"] for c in reply.tool_calls] == ["set_unit"], reply
        assert reply.tool_calls[0]["args"]["unit"] in ("celsius", "fahrenheit")
        assert set(reply.tool_calls[0]["args"]) == {"unit"}  # no fields beyond the schema
        assert reply.response_metadata["finish_reason"] == "tool_calls"
        assert reply.response_metadata["semgrad"] is not None


def test_tool_choice_any_calls_one_and_none_calls_none(model: ChatSemGrad) -> None:
    forced = model.bind_tools([get_weather, set_unit], tool_choice="any")
    reply = forced.invoke("What is the weather in Paris?")
    assert len(reply.tool_calls) == 1 and reply.tool_calls[0]["name"] in ("get_weather", "set_unit")
    streamed = list(forced.stream("What is the weather in Paris?"))
    assert [c["name"] for c in streamed[-1].tool_call_chunks] == [reply.tool_calls[0]["name"]]
    plain = model.invoke("What is the weather in Paris?")
    none = model.bind_tools([get_weather, set_unit], tool_choice="none").invoke(
        "What is the weather in Paris?")
    assert none.tool_calls == [] and none.content == plain.content
    assert none.response_metadata["prompt_ids"] == plain.response_metadata["prompt_ids"]


def test_a_tool_choice_naming_no_bound_tool_fails_at_bind(model: ChatSemGrad) -> None:
    with pytest.raises(ConfigError, match="tool_choice names 'mul'"):
        model.bind_tools([get_weather, set_unit], tool_choice="mul")
