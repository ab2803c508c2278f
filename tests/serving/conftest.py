"""Fixtures of the serving tests: one llama.cpp server for the whole run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from semgrad_guard.model.default_model import default_gguf_path

from .llama_server import llama_server


@pytest.fixture(scope="session")
def served_default_model() -> Iterator[str]:
    """The OpenAI base URL of a llama.cpp server serving the default model's GGUF."""
    with llama_server(default_gguf_path()) as url:
        yield url


@pytest.fixture
def closed_event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The main thread's event loop for the test, closed after it.

    LlamaIndex's synchronous calls run coroutines on the main thread's loop
    (``asyncio_run``), creating one when there is none and leaving it open; a later
    ``asyncio.run`` then drops it unclosed, which fails the run with a ResourceWarning.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()
