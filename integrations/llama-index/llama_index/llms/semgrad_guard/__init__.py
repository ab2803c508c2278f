"""SemGrad uncertainty guardrails for LlamaIndex, on local Hugging Face models.

- :class:`SemGradLLM`: an LLM whose every answer carries its SemGrad score;
- :class:`SemGradEvaluator`: an evaluator for ``RetryQueryEngine`` /
  ``RetrySourceQueryEngine``;
- :class:`GuardedQueryEngine`: applies a chain's policy (pass, abstain, retry with
  retrieval, escalate) from the same policy file as the LangChain integration;
- :class:`GuardedChatEngine`: the same for every turn of a chat engine
  (``condense_plus_context``, ``context``, ``condense_question``, ``simple``);
- :class:`GuardDecisionEvent`: each decision, for LlamaIndex instrumentation handlers;
- :class:`UncertaintyEventHandler`: records the score of every LLM call (observes only);
- :class:`OfflineMiniLMEmbedding`: offline sentence embeddings for vector indexes;
- :func:`check_llm`: checks that an ``OpenAILike`` server serves the scorer's model
  (answers of such an LLM are scored from the server's tokens by the query engine and
  the event handler).

>>> from llama_index.llms.semgrad_guard import SemGradLLM
>>> llm = SemGradLLM(max_new_tokens=16)
>>> llm.complete("What is the chemical symbol of gold?").additional_kwargs["semgrad"]["method"]
'semgrad'
"""

from .base import SemGradLLM
from .chat_engine import GuardedChatEngine
from .embeddings import OfflineMiniLMEmbedding
from .evaluator import SemGradEvaluator
from .event_handler import LLMCallScore, UncertaintyEventHandler
from .instrumentation import GuardDecisionEvent, ScoreSpanHandler
from .query_engine import GuardedQueryEngine
from .scores import (
    DECISION_KEY,
    SCORE_ERROR_KEY,
    SCORE_KEY,
    UNCERTAIN_KEY,
    ScoredCompletion,
    answer_prompt,
    score_from_response,
    score_metadata,
)
from .served import check_llm

__all__ = [
    "DECISION_KEY",
    "SCORE_ERROR_KEY",
    "SCORE_KEY",
    "UNCERTAIN_KEY",
    "GuardDecisionEvent",
    "GuardedChatEngine",
    "GuardedQueryEngine",
    "LLMCallScore",
    "OfflineMiniLMEmbedding",
    "ScoreSpanHandler",
    "ScoredCompletion",
    "SemGradEvaluator",
    "SemGradLLM",
    "UncertaintyEventHandler",
    "answer_prompt",
    "check_llm",
    "score_from_response",
    "score_metadata",
]
