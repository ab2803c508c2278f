"""Scripted scores for your own tests.

A :class:`ScriptedScorer` stands where a :class:`~semgrad_guard.SemGradScorer` would:
it returns the scores you script, one per call, in order, and raises the errors you
script, so a test of your guarded chain (its pass, abstain, retry, escalate and failure
paths) runs without a model and decides exactly as the policy says.

>>> from semgrad_guard import Guard, PolicyConfig, ScoringError
>>> from semgrad_guard.testing import ScriptedScorer
>>> policy = PolicyConfig.from_dict({"version": 1, "default": {
...     "threshold": {"max_score": 0.5}, "actions": ["abstain"]}})
>>> guard = Guard(policy, scorer=ScriptedScorer([0.2, 0.9, ScoringError("no ids")]))
>>> [guard.check("Capital of France?", "Paris").action for _ in range(3)]
['pass', 'abstain', 'abstain']
>>> guard.scorer.calls[0]
('text', 'Capital of France?', 'Paris')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .model.generation import Generation
from .model.prompts import Prompt
from .scoring.result import SCORE_NAMES, UncertaintyScore

__all__ = ["ScriptedScorer", "scripted_score"]


def scripted_score(value: float, method: str = "semgrad", *, retokenized: bool = False
                   ) -> UncertaintyScore:
    """An :class:`UncertaintyScore` whose every score equals ``value`` (so a rule reads
    ``value`` whichever score it names).

    >>> score = scripted_score(0.25)
    >>> score.value, score.scores["nll"], score.model
    (0.25, 0.25, 'scripted')
    """
    return UncertaintyScore(
        method=method, value=float(value), scores=dict.fromkeys(SCORE_NAMES, float(value)),
        components={"semgrad": float(value), "pg": 0.0, "mean_entropy": 0.0, "alpha": 0.0},
        anchor_offset=-1, anchor_token="<scripted>", layers=(1,), anchor_source="explicit",
        profile_id=None, model="scripted", prompt_ids=(1,), response_ids=(2,),
        retokenized=retokenized)


class ScriptedScorer:
    """A scorer that returns scripted scores, one per answer scored, in order.

    ``scores`` holds values (each becomes a :func:`scripted_score`) and exceptions
    (raised instead, to script a scoring failure). Running out of entries raises
    ``LookupError``, so code that scores more often than the script expects fails
    loudly. ``calls`` records what was scored: ``("generation", prompt_ids,
    response_ids)``, ``("ids", prompt_ids, response_ids)`` or ``("text", prompt,
    answer)``; answers scored from text are flagged ``retokenized``, as a real
    scorer flags them.

    >>> from semgrad_guard import ScoringError
    >>> scorer = ScriptedScorer([0.1, ScoringError("no ids")])
    >>> scorer.score_text("q", "a").value, scorer.remaining
    (0.1, 1)
    >>> scorer.score_text("q", "a")
    Traceback (most recent call last):
    ...
    semgrad_guard.errors.ScoringError: no ids
    """

    def __init__(self, scores: Iterable[float | BaseException]) -> None:
        self.scores = list(scores)
        self.calls: list[tuple[Any, ...]] = []

    @property
    def remaining(self) -> int:
        """How many scripted entries are left."""
        return len(self.scores) - len(self.calls)

    def _next(self, call: tuple[Any, ...], *, retokenized: bool) -> UncertaintyScore:
        self.calls.append(call)
        index = len(self.calls) - 1
        if index >= len(self.scores):
            raise LookupError(f"scripted scorer asked for score {index + 1} of only "
                              f"{len(self.scores)}")
        item = self.scores[index]
        if isinstance(item, BaseException):
            raise item
        return scripted_score(item, retokenized=retokenized)

    def score_generation(self, generation: Generation) -> UncertaintyScore:
        """The next scripted score, for an answer known by its exact ids."""
        return self._next(("generation", generation.prompt_ids, generation.response_ids),
                          retokenized=False)

    def score_text(self, prompt: Prompt, response: str) -> UncertaintyScore:
        """The next scripted score, for an answer known only as text (flagged
        ``retokenized``)."""
        return self._next(("text", prompt, response), retokenized=True)

    def score_batch(self, items: Sequence[Generation | tuple[Sequence[int], Sequence[int]]],
                    *, retokenized: bool = False, **_: Any) -> list[UncertaintyScore]:
        """The next scripted scores, one per generation or ``(prompt_ids, response_ids)``
        pair."""
        out = []
        for item in items:
            if isinstance(item, Generation):
                out.append(self.score_generation(item))
            else:
                prompt_ids, response_ids = item
                out.append(self._next(("ids", tuple(prompt_ids), tuple(response_ids)),
                                      retokenized=retokenized))
        return out
