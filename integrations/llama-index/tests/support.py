"""Building blocks of the LlamaIndex tests: a scripted LLM and small real indexes.

The LLM is a real ``CustomLLM`` subclass of llama-index-core whose n-th call answers a
scripted text; retrieval uses real ``VectorStoreIndex`` es over the offline MiniLM
embeddings, so the depth a policy asks for is the number of passages a retriever returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.chat_engine.types import AgentChatResponse
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode
from llama_index.llms.semgrad_guard import OfflineMiniLMEmbedding

from semgrad_guard.policy import Guard
from semgrad_guard.testing import ScriptedScorer
from tests.behaviours import RecordingReviewQueue, Scenario

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


def meta(response: Response | AgentChatResponse) -> dict[str, Any]:
    """A guarded response's metadata (the decision and the score)."""
    assert response.metadata is not None
    return response.metadata


def check_scenario(scenario: Scenario, response: Response | AgentChatResponse, llm: ScriptedLLM, scorer: ScriptedScorer,
          guard: Guard) -> None:
    """A guarded query (or chat) engine's answer to a shared scenario: the decision,
    every attempt really run at the depth and on the retriever the policy asked for,
    the scores used, the review case and the audit record."""
    expected = scenario.expected
    decision = meta(response)["guard_decision"]
    assert response.response == expected.answer
    assert decision["action"] == expected.action
    assert decision["passed"] is expected.passed
    assert decision["chosen_index"] == expected.best
    assert decision["chosen_answer"] == scenario.answers[expected.best]
    assert [a["k"] for a in decision["attempts"]] == expected.ks
    assert set(scenario.flags) <= set(decision["flags"])
    assert scorer.remaining == 0, "every scripted score is used, and no more"
    # Each attempt really ran: one LLM call each, over as many passages as the depth
    # the policy asked for (the chain's own k when it asked for none).
    assert len(llm.prompts) == expected.attempts
    retrievers = scenario.retrievers or [None] * expected.attempts
    for attempt, prompt, name in zip(decision["attempts"], llm.prompts, retrievers,
                                     strict=True):
        k = attempt["k"] or scenario.chain_k
        assert len(attempt["context"]) == k
        pool = OTHER_PASSAGES if name == "bm25" else MAIN_PASSAGES
        assert set(attempt["context"]) <= set(pool)
        assert attempt["query"] in prompt
        assert all(passage in prompt for passage in attempt["context"])
    if scenario.queries is not None:
        assert [a["query"] for a in decision["attempts"]] == scenario.queries
    # The answers were scored as text, against the question-answering prompt.
    assert all(call[0] == "text" for call in scorer.calls)
    chosen = decision["attempts"][expected.best]
    assert [n.node.get_content() for n in response.source_nodes] == chosen["context"]
    score = meta(response)["semgrad"]
    if isinstance(scenario.scores[expected.best], float):
        assert score["value"] == pytest.approx(scenario.scores[expected.best])
        assert score["retokenized"] is True
    else:
        assert score is None and "scripted scoring failure" in meta(response)["semgrad_error"]
    queue = guard.review_queue
    if expected.case:
        assert isinstance(queue, RecordingReviewQueue) and len(queue.cases) == 1
        assert decision["case_id"] == queue.cases[0].id
        assert queue.cases[0].fields["context"] == chosen["context"]
    else:
        assert decision["case_id"] is None
    assert guard.audit is not None
    assert [r.action for r in guard.audit.records()] == [expected.action]
