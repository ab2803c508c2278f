"""The package's public surface is deliberate, and its documented examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import langchain_semgrad_guard

PUBLIC = [
    "ATTEMPT_KEY",
    "DEFAULT_TOOL_PROMPT",
    "ChatSemGrad",
    "GuardedChain",
    "ReviewResumer",
    "ScoredGeneration",
    "SemGradAgentState",
    "SemGradCallbackHandler",
    "SemGradMiddleware",
    "__version__",
    "check_chat_model",
    "guard_chain",
    "parse_tool_calls",
    "resume_from_review",
    "review_decision",
    "score_from_metadata",
    "widen_retrieval",
]


def test_public_api_is_pinned() -> None:
    assert sorted(langchain_semgrad_guard.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", [n for n in PUBLIC if not n.isupper() and n != "__version__"])
def test_public_api_documents_an_example(name: str) -> None:
    doc = getattr(langchain_semgrad_guard, name).__doc__ or ""
    assert ">>> " in doc or name in ("SemGradAgentState", "__version__")


# The examples of these modules need no model, or the default one (runnables); the chat
# model's and the callback handler's are run by test_chat_model.py and test_callbacks.py,
# which do the same things.
@pytest.mark.parametrize("module", ["tool_calls", "messages", "runnables", "middleware",
                                    "structured_output", "loading", "tracing"])
def test_documented_examples_run(module: str) -> None:
    loaded = importlib.import_module(f"langchain_semgrad_guard.{module}")
    result = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
