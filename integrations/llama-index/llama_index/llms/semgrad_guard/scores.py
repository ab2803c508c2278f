"""How a score travels through LlamaIndex, laid out as the LangChain integration lays it
out in ``response_metadata``.

An LLM response's ``additional_kwargs`` holds:

- ``semgrad``: the score (:meth:`UncertaintyScore.to_dict` without the ids; its
  ``value`` is **higher = more uncertain**), or ``None`` with ``semgrad_error`` saying
  why it could not be computed;
- ``prompt_ids`` / ``response_ids`` / ``stop_reason``: the exact generation.

A guarded query engine's ``Response.metadata`` holds ``semgrad`` (the chosen attempt's
score) and ``guard_decision`` (:meth:`GuardDecision.to_dict`).
:func:`score_from_response` reads the score back from either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL

from semgrad_guard import Generation, UncertaintyScore
from semgrad_guard.model.prompts import Prompt

#: The key of the score in LLM responses and guarded query-engine responses.
SCORE_KEY = "semgrad"
#: The key saying why an answer has no score.
SCORE_ERROR_KEY = "semgrad_error"
#: The key of the guard's decision in a guarded query-engine response.
DECISION_KEY = "guard_decision"


def score_metadata(score: UncertaintyScore) -> dict[str, Any]:
    """The score as response metadata holds it: ``to_dict()`` without the ids."""
    data = score.to_dict()
    data.pop("prompt_ids")
    data.pop("response_ids")
    return data


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
        data: dict[str, Any] = {
            SCORE_KEY: None if self.score is None else score_metadata(self.score),
            "prompt_ids": list(self.generation.prompt_ids),
            "response_ids": list(self.generation.response_ids),
            "stop_reason": self.generation.stop_reason,
        }
        if self.error is not None:
            data[SCORE_ERROR_KEY] = self.error
        return data


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
        if isinstance(holder, Mapping) and isinstance(holder.get(SCORE_KEY), Mapping):
            fields = dict(holder[SCORE_KEY])
            fields["layers"] = tuple(fields.get("layers", ()))
            fields["prompt_ids"] = tuple(holder.get("prompt_ids") or ())
            fields["response_ids"] = tuple(holder.get("response_ids") or ())
            return UncertaintyScore(**fields)
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
