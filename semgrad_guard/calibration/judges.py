"""Correctness judges: decide whether a generated answer matches the gold answers.

The judge is a swappable part of the benchmark: anything with
``is_correct(answer, gold) -> bool`` works.

- :class:`ContainmentJudge`, for short answers (SciQ): after normalising (lower case,
  punctuation and articles removed, whitespace collapsed) a gold answer appears in the
  answer as whole words, or the answer appears in a gold answer.
- :class:`EmbeddingJudge`, for sentence answers (TruthfulQA): the maximum over gold
  answers of the cosine similarity of all-MiniLM-L6-v2 embeddings is at least
  ``threshold`` (default :data:`DEFAULT_EMBEDDING_THRESHOLD`).

>>> ContainmentJudge().is_correct("The answer is Darwin.", ["darwin"])
True
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any, Protocol

#: Cosine similarity (all-MiniLM-L6-v2) at or above which a sentence answer counts as
#: correct against its closest gold answer.
DEFAULT_EMBEDDING_THRESHOLD = 0.7

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and English articles removed, whitespace collapsed."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


class CorrectnessJudge(Protocol):
    """What the benchmark needs of a judge."""

    name: str

    def is_correct(self, answer: str, gold: Sequence[str]) -> bool: ...


class ContainmentJudge:
    """Normalised containment, both ways, on word boundaries.

    An empty answer is never correct. An answer counts when a gold answer occurs in it
    as whole words ("carbon dioxide" in "it is carbon dioxide") or when it occurs in a
    gold answer as whole words and is at least ``min_reverse_chars`` long (so "dioxide"
    for "carbon dioxide" counts, "a" does not).
    """

    name = "containment"

    def __init__(self, min_reverse_chars: int = 4) -> None:
        self.min_reverse_chars = min_reverse_chars

    def is_correct(self, answer: str, gold: Sequence[str] | str) -> bool:
        gold = [gold] if isinstance(gold, str) else list(gold)
        a = normalize_answer(answer)
        if not a:
            return False
        padded = f" {a} "
        for g in gold:
            n = normalize_answer(g)
            if not n:
                continue
            if f" {n} " in padded:
                return True
            if len(a) >= self.min_reverse_chars and f" {a} " in f" {n} ":
                return True
        return False


class EmbeddingJudge:
    """Maximum cosine similarity to any gold answer, against a threshold.

    ``encoder`` is anything with ``encode(list[str], normalize_embeddings=True)``; by
    default the offline all-MiniLM-L6-v2 model.
    """

    name = "embedding"

    def __init__(self, threshold: float = DEFAULT_EMBEDDING_THRESHOLD,
                 encoder: Any | None = None) -> None:
        self.threshold = threshold
        self._encoder = encoder

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from ..embeddings import load_sentence_encoder

            self._encoder = load_sentence_encoder()
        return self._encoder

    def similarity(self, answer: str, gold: Sequence[str] | str) -> float:
        """The best cosine similarity between the answer and a gold answer."""
        gold = [gold] if isinstance(gold, str) else list(gold)
        if not answer.strip() or not gold:
            return 0.0
        vectors = self.encoder.encode([answer, *gold], normalize_embeddings=True,
                                      show_progress_bar=False)
        return float((vectors[1:] @ vectors[0]).max())

    def verdict(self, answer: str, gold: Sequence[str] | str) -> tuple[bool, float]:
        """Whether the answer is correct, and the similarity that decided it."""
        similarity = self.similarity(answer, gold)
        return similarity >= self.threshold, similarity

    def is_correct(self, answer: str, gold: Sequence[str] | str) -> bool:
        return self.verdict(answer, gold)[0]


def judge_for(dataset_name: str) -> CorrectnessJudge:
    """The documented judge of a dataset: embedding similarity for TruthfulQA (sentence
    answers), containment for everything else (short answers)."""
    if dataset_name.lower() == "truthfulqa":
        return EmbeddingJudge()
    return ContainmentJudge()
