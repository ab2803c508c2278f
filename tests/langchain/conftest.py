"""Fixtures of the LangChain tests: a ChatSemGrad over the shared default model."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def chat(default_lm: Any, default_scorer: Any) -> Any:
    """ChatSemGrad over the session's default model, with short answers."""
    from langchain_semgrad_guard import ChatSemGrad

    return ChatSemGrad(model=default_lm, scorer=default_scorer, max_new_tokens=12)
