"""How a score travels through LlamaIndex: on LLM responses, on query-engine responses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL

from semgrad_guard import Generation, UncertaintyScore
from semgrad_guard.model.prompts import Prompt

#: The key of the score in an LLM response's ``additional_kwargs`` and in a query
#: engine response's ``metadata``.
UNCERTAINTY_KEY = "uncertainty"
#: The key of the guard's decision in a query engine response's ``metadata``.
DECISION_KEY = "guard"


def score_summary(score: UncertaintyScore | None, *, error: str | None = None,
                  generation: Generation | None = None) -> dict[str, Any]:
    """A score as plain data (no token ids), for response metadata and logs.

    ``score`` is the headline value (**higher = more uncertain**), ``None`` when the
    answer could not be scored (``error`` says why).

    >>> score_summary(None, error="EmptyResponseError: empty response")["score"] is None
    True
    """
    data: dict[str, Any] = {
        "score": None, "method": None, "scores": {}, "retokenized": None,
        "direction": "higher_is_more_uncertain", "model": None, "anchor_source": None,
        "profile_id": None, "error": error,
    }
    if score is not None:
        data.update(score=score.value, method=score.method, scores=dict(score.scores),
                    retokenized=score.retokenized, model=score.model,
                    anchor_source=score.anchor_source, profile_id=score.profile_id)
    if generation is not None:
        data.update(stop_reason=generation.stop_reason,
                    response_tokens=len(generation.response_ids))
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
        """The score as plain data, as put in ``additional_kwargs["uncertainty"]``."""
        return score_summary(self.score, error=self.error, generation=self.generation)


def uncertainty_of(response: Any) -> dict[str, Any] | None:
    """The score data carried by an LLM response or a query engine response, if any.

    >>> from llama_index.core.base.response.schema import Response
    >>> uncertainty_of(Response("Au", metadata={"uncertainty": {"score": 0.1}}))
    {'score': 0.1}
    """
    for attr in ("additional_kwargs", "metadata"):
        data = getattr(response, attr, None)
        if isinstance(data, dict) and isinstance(data.get(UNCERTAINTY_KEY), dict):
            return data[UNCERTAINTY_KEY]  # type: ignore[no-any-return]
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
