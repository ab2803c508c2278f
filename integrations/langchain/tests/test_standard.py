"""LangChain's own standard tests for chat models (``langchain-tests``), run on ChatSemGrad
over the real default model.

A standard test that fails for a reason outside this package is overridden with
``xfail(reason=..., run=False)``, the way ``langchain-tests`` asks a standard test to be
set aside (it refuses overrides without one); the reason names the cause: the 135M
default model, or langchain-core itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from semgrad_guard.model import DEFAULT_MODEL_NAME

from langchain_semgrad_guard import ChatSemGrad

LOOPS = ("the 135M default model repeats itself inside a JSON string until max_tokens "
         "(e.g. '{\"setup\": \"The cat was a cat, and the cat was a cat, ...'), so the "
         "answer is cut off and raises OutputParserException as it should; "
         "test_structured_output.py shows the same path completing on schemas it can fill")
SCHEMA_TYPES = ["pydantic", "typeddict", "json_schema"]
UNPROMPTED = ("the 135M default model does not call a tool of its own accord without "
              "tool_examples (tool_choice='any' does make it call: test_tool_calling passes)")


class ChatSemGradCapabilities:
    """What both suites are told about ChatSemGrad."""

    @property
    def chat_model_class(self) -> type[ChatSemGrad]:
        return ChatSemGrad

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one ChatSemGrad runs one local model


class TestChatSemGradUnit(ChatSemGradCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": DEFAULT_MODEL_NAME}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A local model has no API key; every other standard parameter is taken.
        params = dict(super().standard_chat_model_params)
        params.pop("api_key")
        return params

    @pytest.mark.xfail(reason="langchain-core 1.8's load(allowed_objects='all') admits only "
                              "the classes in its own serialisation mapping, so no class of "
                              "an outside package loads this way; ChatSemGrad round-trips "
                              "with allowed_objects=[ChatSemGrad] (test_chat_model.py)",
                       run=False)
    def test_serdes(self, model: Any, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)


@pytest.mark.real_model
class TestChatSemGradIntegration(ChatSemGradCapabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": DEFAULT_MODEL_NAME, "max_tokens": 40}

    @pytest.mark.xfail(reason=LOOPS, run=False)
    @pytest.mark.parametrize("schema_type", SCHEMA_TYPES)
    def test_structured_output(self, model: Any, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=LOOPS, run=False)
    @pytest.mark.parametrize("schema_type", SCHEMA_TYPES)
    async def test_structured_output_async(self, model: Any, schema_type: Any) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=LOOPS, run=False)
    def test_structured_output_pydantic_2_v1(self, model: Any) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=LOOPS, run=False)
    def test_structured_output_optional_param(self, model: Any) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(reason=LOOPS + "; in json_mode, where only the prompt names the keys, "
                       "it also leaves out 'punchline'", run=False)
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(reason="the 135M default model repeats itself inside the forced call's "
                       "'customer_name' string until max_tokens, so the call is cut off and "
                       "comes back as an invalid tool call", run=False)
    def test_unicode_tool_call_integration(self, model: Any, *, tool_choice: str | None = None,
                                           force_tool_call: bool = True) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice,
                                                   force_tool_call=force_tool_call)

    @pytest.mark.xfail(reason=UNPROMPTED, run=False)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)
