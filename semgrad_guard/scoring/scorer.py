"""What the guard needs from a scorer: :class:`~semgrad_guard.SemGradScorer` is one; a
service or a stand-in in a test can be another."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..model.generation import Generation
from ..model.prompts import Prompt
from .result import UncertaintyScore


@runtime_checkable
class Scorer(Protocol):
    """Scores one answer: by its exact ids when the generation is known, else by its
    text (re-tokenised, and flagged so)."""

    def score_generation(self, generation: Generation) -> UncertaintyScore: ...

    def score_text(self, prompt: Prompt, response: str) -> UncertaintyScore: ...
