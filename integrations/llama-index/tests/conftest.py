"""Fixtures of the LlamaIndex tests: offline settings, a tiny model, small indexes."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from llama_index.core import Settings, VectorStoreIndex
from llama_index.llms.semgrad_guard import OfflineMiniLMEmbedding, SemGradLLM

from semgrad_guard import LocalModel

from .support import MAIN_PASSAGES, OTHER_PASSAGES, build_index


@pytest.fixture(scope="session")
def embed_model() -> OfflineMiniLMEmbedding:
    return OfflineMiniLMEmbedding()


@pytest.fixture(autouse=True)
def offline_settings(embed_model: OfflineMiniLMEmbedding) -> Iterator[None]:
    """Nothing falls back to LlamaIndex's remote defaults; the globals are restored."""
    saved = (Settings._llm, Settings._embed_model)
    Settings.embed_model = embed_model
    Settings._llm = None
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model = saved


@pytest_asyncio.fixture(autouse=True)
async def closed_chat_memories(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """LlamaIndex's default chat memory keeps an in-memory aiosqlite database whose
    connections it never closes (a ResourceWarning once collected): close the ones a
    test made when it ends, on the test's own event loop."""
    from llama_index.core.memory import Memory

    made: list[Memory] = []
    build = Memory.from_defaults.__func__  # type: ignore[attr-defined]

    def from_defaults(cls: type[Memory], *args: Any, **kwargs: Any) -> Memory:
        memory = build(cls, *args, **kwargs)
        made.append(memory)
        return memory

    monkeypatch.setattr(Memory, "from_defaults", classmethod(from_defaults))
    yield
    for memory in made:
        engine = getattr(memory.sql_store, "_async_engine", None)
        if engine is not None:
            await engine.dispose()
    gc.collect()  # a connection left open is reported here, against this test


@pytest.fixture(scope="session")
def tiny_lm(default_lm: LocalModel) -> LocalModel:
    """A two-layer random Llama on the default model's tokenizer and chat template:
    generation and scoring in milliseconds, so the LLM's plumbing is tested quickly."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(default_lm.tokenizer), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=default_lm.tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    return LocalModel(model, default_lm.tokenizer, prompt_format="chat", name="tiny-llama")


@pytest.fixture
def tiny_llm(tiny_lm: LocalModel) -> SemGradLLM:
    return SemGradLLM(tiny_lm, max_new_tokens=6)


@pytest.fixture(scope="session")
def main_index(embed_model: OfflineMiniLMEmbedding) -> VectorStoreIndex:
    return build_index(MAIN_PASSAGES, embed_model)


@pytest.fixture(scope="session")
def other_index(embed_model: OfflineMiniLMEmbedding) -> VectorStoreIndex:
    return build_index(OTHER_PASSAGES, embed_model)
