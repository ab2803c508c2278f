"""One try of a guarded chain: what the guard asks for, what the chain returns, and the
record the guard keeps of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model.generation import Generation
from ..model.prompts import Prompt
from ..scoring.metadata import error_from_metadata, generation_from_metadata, score_from_metadata
from ..scoring.result import UncertaintyScore


@dataclass(frozen=True)
class Attempt:
    """What the guard asks the chain to run.

    ``number`` is 0 for the first try; ``k`` is the retrieval depth to use (``None``:
    the chain's own); ``query`` is the (possibly rewritten) question to retrieve and
    answer with; ``retriever`` names an alternative retriever when the policy gives one.

    >>> Attempt(number=0, k=None, query="What is the boiling point of water?")
    Attempt(number=0, k=None, query='What is the boiling point of water?', retriever=None)
    """

    number: int
    k: int | None
    query: str
    retriever: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "k": self.k, "query": self.query,
                "retriever": self.retriever}


@dataclass(frozen=True)
class AttemptResult:
    """What the chain returns for one attempt.

    Give ``generation`` (the exact ids, from :meth:`LocalModel.generate`) when the chain
    knows it, so the score uses the ids the model produced; without it the answer is
    re-tokenised against ``prompt`` (default: the question) and the score is flagged.
    Give ``score`` when the chain has already scored the answer, or ``score_error`` when
    it tried and failed: the guard then applies the rule's ``on_score_failure`` to that
    error instead of scoring again. ``context`` holds the retrieved passages (kept for
    audit and review); ``raw`` is the chain's own output. An attempt without content
    (:attr:`no_answer`: a generation that produced none, or a blank answer) is never
    scored: the guard treats it as a scoring failure.

    >>> AttemptResult("100 degrees Celsius", context=["Water boils at 100 C."]).answer
    '100 degrees Celsius'
    """

    answer: str
    generation: Generation | None = None
    score: UncertaintyScore | None = None
    context: list[str] = field(default_factory=list)
    raw: Any = None
    prompt: Prompt | None = None
    score_error: Exception | None = None

    @classmethod
    def from_metadata(cls, answer: str, metadata: Mapping[str, Any], *, text: str | None = None,
                      **fields: Any) -> AttemptResult:
        """The attempt of an answer whose metadata carries its score, or why it has none,
        and its exact ids (:mod:`semgrad_guard.scoring.metadata`). ``text`` is the text
        generation produced, when the chain reshaped it into ``answer``.

        >>> AttemptResult.from_metadata("Au", {"semgrad_error": "ScoringError: no ids"}
        ...                             ).score_error
        ScoringError('no ids')
        """
        score = score_from_metadata(metadata)
        return cls(answer=answer, score=score,
                   generation=generation_from_metadata(metadata, answer if text is None
                                                       else text),
                   score_error=None if score is not None else error_from_metadata(metadata),
                   **fields)

    def scored_prompt(self, question: str) -> Prompt | None:
        """What the answer is scored against: ``prompt``; else the question, when the
        guard scores the text itself (no generation, score or score error came with it)."""
        if self.prompt is not None:
            return self.prompt
        if self.generation is None and self.score is None and self.score_error is None:
            return question
        return None

    @property
    def no_answer(self) -> bool:
        """Whether the model gave no answer: the generation, when given, decides (its
        text is the answer as generated), else the answer text."""
        if self.generation is not None:
            return self.generation.no_answer
        return not self.answer.strip()


@dataclass(frozen=True)
class AttemptRecord:
    """The guard's record of one attempt: what was asked, answered and scored.

    ``value`` is the score the rule reads (``None`` when scoring failed, ``error`` says
    why); ``passed`` says whether the attempt was under the threshold. ``no_answer`` marks
    an attempt whose model produced no content: it is never scored, and follows the
    rule's ``on_score_failure``. ``prompt`` is what the answer was scored against (the
    chain's prompt, or the question when the guard scored the answer without one;
    ``None`` when only the exact ids or a ready score came with it).
    """

    attempt: Attempt
    answer: str
    score: UncertaintyScore | None
    value: float | None
    error_probability: float | None
    passed: bool
    context: list[str] = field(default_factory=list)
    error: str | None = None
    raw: Any = field(default=None, repr=False, compare=False)
    no_answer: bool = False
    prompt: Prompt | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.attempt.to_dict(),
            "answer": self.answer,
            "value": self.value,
            "method": None if self.score is None else self.score.method,
            "scores": None if self.score is None else dict(self.score.scores),
            "retokenized": None if self.score is None else self.score.retokenized,
            "error_probability": self.error_probability,
            "passed": self.passed,
            "context": list(self.context),
            "error": self.error,
            "no_answer": self.no_answer,
        }
