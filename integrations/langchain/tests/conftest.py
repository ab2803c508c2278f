"""Fixtures of the LangChain tests: a ChatSemGrad over the shared default model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="session")
def named_default_model(default_lm: Any) -> Any:
    """The session's default model, found by its name too (``ChatSemGrad(model=
    "SmolLM2-135M-Instruct")``, LangChain's standard tests), instead of a second copy."""
    from langchain_semgrad_guard.loading import shared_model

    return shared_model(default_lm)


@pytest.fixture(scope="session")
def chat(default_lm: Any, default_scorer: Any) -> Any:
    """ChatSemGrad over the session's default model, with short answers."""
    from langchain_semgrad_guard import ChatSemGrad

    return ChatSemGrad(model=default_lm, scorer=default_scorer, max_new_tokens=12)


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while these tests run: on a CPU shared with other jobs, torch's
    thread pool spins against them and runs the tiny model several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
