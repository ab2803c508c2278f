"""SemGrad uncertainty guardrails for LlamaIndex, on local Hugging Face models.

- :class:`SemGradLLM`: an LLM whose every answer carries its SemGrad score;
- :class:`SemGradEvaluator`: an evaluator for ``RetryQueryEngine`` /
  ``RetrySourceQueryEngine``;
- :class:`GuardedQueryEngine`: applies a chain's policy (pass, abstain, retry with
  retrieval, escalate) from the same policy file as the LangChain integration;
- :class:`UncertaintyEventHandler`: records the score of every LLM call (observes only);
- :class:`OfflineMiniLMEmbedding`: offline sentence embeddings for vector indexes.

>>> from llama_index.llms.semgrad_guard import SemGradLLM
>>> llm = SemGradLLM(max_new_tokens=16)
>>> llm.complete("What is the chemical symbol of gold?").additional_kwargs["semgrad"]["method"]
'semgrad'
"""

from .base import SemGradLLM
from .embeddings import OfflineMiniLMEmbedding
from .evaluator import SemGradEvaluator
from .event_handler import LLMCallScore, UncertaintyEventHandler
from .query_engine import GuardedQueryEngine
from .scores import (
    DECISION_KEY,
    SCORE_ERROR_KEY,
    SCORE_KEY,
    ScoredCompletion,
    answer_prompt,
    score_from_response,
    score_metadata,
)

__all__ = [
    "DECISION_KEY",
    "SCORE_ERROR_KEY",
    "SCORE_KEY",
    "GuardedQueryEngine",
    "LLMCallScore",
    "OfflineMiniLMEmbedding",
    "ScoredCompletion",
    "SemGradEvaluator",
    "SemGradLLM",
    "UncertaintyEventHandler",
    "answer_prompt",
    "score_from_response",
    "score_metadata",
]
