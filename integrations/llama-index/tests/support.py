"""Building blocks of the LlamaIndex tests: a scripted LLM and small real indexes.

The LLM is a real ``CustomLLM`` subclass of llama-index-core whose n-th call answers a
scripted text; retrieval uses real ``VectorStoreIndex`` es over the offline MiniLM
embeddings, so the depth a policy asks for is the number of passages a retriever returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode
from llama_index.llms.semgrad_guard import OfflineMiniLMEmbedding

#: Passages of the main index: more than the deepest retry (16) asks for.
MAIN_PASSAGES = [f"Main passage {i}: the city archive holds record number {i}." for i in range(20)]
#: Passages of the alternative ("bm25") index: told apart by their prefix.
OTHER_PASSAGES = [f"Other passage {i}: the harbour log lists ship {i}." for i in range(12)]


class ScriptedLLM(CustomLLM):
    """A completion LLM whose n-th call answers ``answers[n]``; it keeps every prompt."""

    answers: list[str] = Field(description="The answer of each call, in order.")
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        return list(self._prompts)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=32_000, num_output=64, model_name="scripted")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._prompts.append(prompt)
        n = len(self._prompts) - 1
        if n >= len(self.answers):
            raise LookupError(f"scripted LLM called {n + 1} times, has {len(self.answers)} "
                              f"answers")
        return CompletionResponse(text=self.answers[n])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any
                        ) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()


def build_index(passages: Sequence[str], embed_model: OfflineMiniLMEmbedding) -> VectorStoreIndex:
    """A vector index with one node per passage (no splitting)."""
    return VectorStoreIndex(nodes=[TextNode(text=p) for p in passages], embed_model=embed_model)


def as_response(response: RESPONSE_TYPE) -> Response:
    """A query engine's answer as the plain ``Response`` it is when nothing streams."""
    assert isinstance(response, Response), type(response)
    return response


def meta(response: Response) -> dict[str, Any]:
    """A guarded response's metadata (the decision and the score)."""
    assert response.metadata is not None
    return response.metadata
