"""How a score travels through LlamaIndex: in the layout every semgrad-guard
integration uses (:mod:`semgrad_guard.scoring.metadata`), so one reader serves both
frameworks.

An LLM response's ``additional_kwargs`` holds:

- ``semgrad``: the score (:meth:`UncertaintyScore.to_dict` without the ids; its
  ``value`` is **higher = more uncertain**), or ``None`` with ``semgrad_error`` saying
  why it could not be computed;
- ``prompt_ids`` / ``response_ids`` / ``stop_reason``: the exact generation.

A guarded query engine's (or chat engine's) response ``metadata`` holds ``semgrad`` (the
chosen attempt's score), ``guard_decision`` (:meth:`GuardDecision.to_dict`) and
``uncertain`` (the answer did not pass); a plain query engine's response over a
:class:`SemGradLLM` holds ``semgrad``, the score of the answer the LLM wrote last.
:func:`score_from_response` reads the score back from either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL

from semgrad_guard import Generation, UncertaintyScore
from semgrad_guard.model.prompts import Prompt
from semgrad_guard.policy import AttemptResult
from semgrad_guard.scoring.metadata import (
    SCORE_ERROR_KEY,
    SCORE_KEY,
    answer_metadata,
    score_from_metadata,
    score_metadata,
    scoring_error,
)

__all__ = ["DECISION_KEY", "SCORE_ERROR_KEY", "SCORE_KEY", "UNCERTAIN_KEY", "ScoredCompletion",
           "answer_prompt", "score_from_response", "score_metadata"]

#: The key of the guard's decision in a guarded query-engine response.
DECISION_KEY = "guard_decision"
#: The key that says a response's answer did not pass its rule (shown anyway: a flag
#: action, or the last answer of a ``RetryQueryEngine`` whose every retry failed).
UNCERTAIN_KEY = "uncertain"


@dataclass(frozen=True)
class ScoredCompletion:
    """One answer of a :class:`SemGradLLM`: the prompt, the exact generation, its score.

    ``score`` is ``None`` when the answer could not be scored; ``error`` says why.
    """

    prompt: Prompt
    generation: Generation
    score: UncertaintyScore | None
    error: str | None = None

    @property
    def text(self) -> str:
        return self.generation.text

    def metadata(self) -> dict[str, Any]:
        """What the LLM puts in a response's ``additional_kwargs``."""
        return answer_metadata(self.generation, self.score, self.error)

    def attempt(self, answer: str | None = None, **fields: Any) -> AttemptResult:
        """What the guard decides on for this answer: its exact ids and its score (or
        the scoring error, which the rule's ``on_score_failure`` then handles)."""
        return AttemptResult(
            answer=self.text if answer is None else answer, generation=self.generation,
            score=self.score, score_error=None if self.error is None or self.score is not None
            else scoring_error(self.error), **fields)


def score_from_response(response: Any) -> UncertaintyScore | None:
    """The score an LLM response or a guarded query-engine response carries, or ``None``.

    >>> from llama_index.core.base.response.schema import Response
    >>> score_from_response(Response("Au")) is None
    True
    """
    raw = getattr(response, "raw", None)
    if isinstance(raw, ScoredCompletion):
        return raw.score
    for attr in ("additional_kwargs", "metadata"):
        holder = getattr(response, attr, None)
        if isinstance(holder, Mapping):
            score = score_from_metadata(holder)
            if score is not None:
                return score
    return None


def answer_prompt(query: str, contexts: Sequence[str] = ()) -> Prompt:
    """The prompt an answer known only as text is re-scored against: LlamaIndex's
    default question-answering prompt over the contexts, or the bare query.

    >>> answer_prompt("Who?")
    'Who?'
    """
    if not contexts:
        return query
    text = DEFAULT_TEXT_QA_PROMPT_TMPL.format(context_str="\n\n".join(contexts), query_str=query)
    return [{"role": "user", "content": text}]
