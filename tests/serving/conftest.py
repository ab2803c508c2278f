"""Fixtures of the serving tests: one llama.cpp server for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from semgrad_guard.model.default_model import default_gguf_path

from .llama_server import llama_server


@pytest.fixture(scope="session")
def served_default_model() -> Iterator[str]:
    """The OpenAI base URL of a llama.cpp server serving the default model's GGUF."""
    with llama_server(default_gguf_path()) as url:
        yield url
