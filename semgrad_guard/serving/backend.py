"""Scoring wire items with a local scorer: the one piece the HTTP service, the Ray Serve
deployment and the Ray Data pipeline share."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import ScoringError, SemGradGuardError
from ..model.identity import ModelIdentity
from ..scoring.result import UncertaintyScore
from .served import ServedAnswer, served_response_ids
from .wire import WIRE_VERSION, ScoreItem

Outcome = UncertaintyScore | SemGradGuardError


class ItemScorer:
    """Scores :class:`~semgrad_guard.serving.wire.ScoreItem` batches with a local
    ``SemGradScorer``: every item's ids are found first, then all of them go through one
    batched pass; an item that cannot be scored gets its own typed error.

    >>> from semgrad_guard import LocalModel, SemGradScorer
    >>> backend = ItemScorer(SemGradScorer(LocalModel.load()))
    >>> [outcome] = backend.score_items([ScoreItem(messages="Capital of France?",
    ...                                            answer="Paris")])
    >>> outcome.retokenized, outcome.value > 0
    (True, True)
    """

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.model = scorer.model
        self._identity: ModelIdentity | None = None

    def identity(self) -> ModelIdentity:
        if self._identity is None:
            self._identity = ModelIdentity.of(self.model)
        return self._identity

    def info(self) -> dict[str, Any]:
        """What a client may ask about the scorer: model, method, anchor, identity."""
        anchor = self.scorer.anchor
        return {"model": self.model.name, "method": self.scorer.method,
                "anchor_offset": anchor.offset, "layers": list(anchor.layers),
                "anchor_source": anchor.source, "profile_id": anchor.profile_id,
                "identity": self.identity().to_dict(), "wire_version": WIRE_VERSION}

    def _row(self, item: ScoreItem) -> tuple[list[int], list[int], bool]:
        if item.kind == "ids":
            return list(item.prompt_ids or []), list(item.response_ids or []), False
        prompt_ids = self.model.prompt_ids(item.prompt)
        if item.kind == "served":
            ids = served_response_ids(self.model, ServedAnswer.from_dict(item.served or {}))
            if ids is not None:
                return prompt_ids, ids, False
        return prompt_ids, self.model.response_ids(item.answer or ""), True

    def score_items(self, items: Sequence[ScoreItem]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        rows: list[tuple[int, list[int], list[int], bool]] = []
        for i, item in enumerate(items):
            try:
                rows.append((i, *self._row(item)))
            except SemGradGuardError as exc:
                outcomes[i] = exc
        for (i, _, _, retokenized), scored in zip(rows, self._score_rows(rows), strict=True):
            if isinstance(scored, UncertaintyScore) and retokenized:
                scored = dataclasses.replace(scored, retokenized=True)
            outcomes[i] = scored
        return [o if o is not None else ScoringError("not scored") for o in outcomes]

    def score_requests(self, requests: Sequence[tuple[ScoreItem, str | None]]
                       ) -> list[Outcome]:
        """Score ``(item, headline method)`` pairs in one pass (requests may differ in
        the score they headline; every score is computed anyway)."""
        outcomes = self.score_items([item for item, _ in requests])
        return [headline(o, method) for o, (_, method) in zip(outcomes, requests, strict=True)]

    def _score_rows(self, rows: Sequence[tuple[int, list[int], list[int], bool]]
                    ) -> list[Outcome]:
        if not rows:
            return []
        pairs = [(p, r) for _, p, r, _ in rows]
        try:
            return list(self.scorer.score_batch(pairs))
        except SemGradGuardError as exc:
            if len(pairs) == 1:
                return [exc]
        # One item spoiled the batch: score them one at a time, so each gets its own
        # outcome.
        outcomes: list[Outcome] = []
        for prompt, response in pairs:
            try:
                outcomes.append(self.scorer.score_batch([(prompt, response)])[0])
            except SemGradGuardError as exc:
                outcomes.append(exc)
        return outcomes


def headline(outcome: Outcome, method: str | None) -> Outcome:
    """The score headlined by ``method`` (unchanged when ``None``)."""
    if method is None or not isinstance(outcome, UncertaintyScore) or method == outcome.method:
        return outcome
    try:
        return outcome.with_method(method)
    except KeyError as exc:
        return ScoringError(f"the scorer does not compute {method!r}: {exc}")
