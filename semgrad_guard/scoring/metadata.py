"""The score as an answer's metadata carries it, and back.

A framework's answer object (LangChain's ``response_metadata``, LlamaIndex's
``additional_kwargs``) holds plain data, laid out the same way by every integration:

- ``semgrad``: the score (:meth:`UncertaintyScore.to_dict` without the ids), or ``None``
  with ``semgrad_error`` saying why it could not be computed (``"ErrorType: message"``);
- ``prompt_ids`` / ``response_ids`` / ``stop_reason``: the exact generation.

:func:`answer_metadata` writes it; :func:`score_from_metadata`,
:func:`generation_from_metadata` and :func:`error_from_metadata` read it back.

>>> from semgrad_guard.model.generation import Generation
>>> from semgrad_guard.testing import scripted_score
>>> generation = Generation((1, 2), (3, 4), "Au", "eos")
>>> metadata = answer_metadata(generation, scripted_score(0.25), None)
>>> score_from_metadata(metadata).value, generation_from_metadata(metadata, "Au") == generation
(0.25, True)
>>> error_from_metadata(answer_metadata(generation, None, "ContextWindowError: too long"))
ContextWindowError('too long')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import errors
from ..errors import GradientAccessError, ScoringError
from ..model.generation import Generation
from ..model.local_model import LocalModel
from ..model.prompts import Prompt
from .result import UncertaintyScore
from .scorer import Scorer
from .semgrad import SemGradScorer

#: The metadata key holding the score.
SCORE_KEY = "semgrad"
#: The metadata key saying why an answer has no score.
SCORE_ERROR_KEY = "semgrad_error"

_STOP_REASONS = ("eos", "length", "stop_string")


def describe_error(error: BaseException) -> str:
    """An error as metadata and records hold it: ``"ErrorType: message"``."""
    return f"{type(error).__name__}: {error}"


def score_or_error(scorer: Scorer, generation: Generation
                   ) -> tuple[UncertaintyScore | None, str | None]:
    """Score a generation on its exact ids: the score, or ``None`` and why it could not
    be computed (an answer is never lost to a scoring failure; a policy's failure mode
    decides what happens to it)."""
    try:
        return scorer.score_generation(generation), None
    except ScoringError as exc:
        return None, describe_error(exc)


def generate_scored(model: LocalModel, scorer: Scorer | None, prompt: Prompt, *,
                    fused: bool = False, **generate_kwargs: Any
                    ) -> tuple[Generation, UncertaintyScore | None, str | None]:
    """Generate an answer and score it on its exact ids: the generation, and its score or
    why it has none (as :func:`score_or_error`). ``scorer=None`` only generates.

    By default, or with any scorer but a :class:`SemGradScorer` of ``model``, it
    generates and then scores the generation (two passes, micro-batched with concurrent
    callers). ``fused=True`` with a :class:`SemGradScorer` of ``model`` scores while
    generating, with no second forward pass over the answer (the same scores to float32
    rounding; not faster on CPU: see :meth:`SemGradScorer.generate_and_score`); such a
    call holds the model's lock on its own, not batched with other callers.
    ``generate_kwargs`` go to generation (a ``streamer`` too).
    """
    if fused and isinstance(scorer, SemGradScorer) and scorer.model is model:
        try:
            [(generation, scored)] = scorer.generate_and_score_batch([prompt], fused=True,
                                                                     **generate_kwargs)
        except GradientAccessError:
            pass  # no graph can be kept here: generate, and say why it has no score
        else:
            if isinstance(scored, ScoringError):
                return generation, None, describe_error(scored)
            return generation, scored, None
    generation = model.generate(prompt, **generate_kwargs)
    if scorer is None:
        return generation, None, None
    return (generation, *score_or_error(scorer, generation))


def score_metadata(score: UncertaintyScore) -> dict[str, Any]:
    """The score as metadata holds it: ``to_dict()`` without the ids (they sit next to
    it, once)."""
    data = score.to_dict()
    data.pop("prompt_ids")
    data.pop("response_ids")
    return data


def answer_metadata(generation: Generation, score: UncertaintyScore | None,
                    error: str | None) -> dict[str, Any]:
    """An answer's metadata: its exact ids and stop reason, and its score or why it has
    none."""
    data: dict[str, Any] = {
        SCORE_KEY: None if score is None else score_metadata(score),
        "prompt_ids": list(generation.prompt_ids),
        "response_ids": list(generation.response_ids),
        "stop_reason": generation.stop_reason,
    }
    if error is not None:
        data[SCORE_ERROR_KEY] = error
    return data


def score_from_metadata(metadata: Mapping[str, Any]) -> UncertaintyScore | None:
    """The score an answer's metadata carries, or ``None``.

    >>> score_from_metadata({"finish_reason": "stop"}) is None
    True
    """
    data = metadata.get(SCORE_KEY)
    if not isinstance(data, Mapping):
        return None
    fields = dict(data)
    fields["layers"] = tuple(fields.get("layers", ()))
    fields["prompt_ids"] = tuple(metadata.get("prompt_ids") or ())
    fields["response_ids"] = tuple(metadata.get("response_ids") or ())
    return UncertaintyScore(**fields)


def generation_from_metadata(metadata: Mapping[str, Any], text: str = "") -> Generation | None:
    """The exact generation behind an answer, when its metadata carries the ids."""
    prompt_ids = metadata.get("prompt_ids")
    response_ids = metadata.get("response_ids")
    if not prompt_ids or not response_ids:
        return None
    reason = metadata.get("stop_reason", "eos")
    return Generation(tuple(int(i) for i in prompt_ids), tuple(int(i) for i in response_ids),
                      text, reason if reason in _STOP_REASONS else "eos")


def error_from_metadata(metadata: Mapping[str, Any]) -> ScoringError | None:
    """Why an answer has no score, as the typed error its producer caught (a
    :class:`ScoringError` subclass), or ``None``."""
    text = metadata.get(SCORE_ERROR_KEY)
    return None if not text else scoring_error(str(text))


def scoring_error(text: str) -> ScoringError:
    """The typed error a ``"ErrorType: message"`` text describes
    (:class:`ScoringError` itself when the type is not one of its subclasses).

    >>> scoring_error("EmptyResponseError: the response has no tokens")
    EmptyResponseError('the response has no tokens')
    """
    name, sep, message = text.partition(": ")
    kind = getattr(errors, name, None) if sep else None
    if isinstance(kind, type) and issubclass(kind, ScoringError):
        return kind(message)
    return ScoringError(text)
