"""Stand-ins for the sentence encoder: deterministic, offline, instant."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEncoder:
    """Unit vectors from a hash of each word, averaged: equal texts embed equally and
    texts sharing words embed close together."""

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def _word(self, word: str) -> np.ndarray:
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).standard_normal(self.dim)

    def encode(self, texts: list[str], normalize_embeddings: bool = True,
               show_progress_bar: bool = False) -> np.ndarray:
        rows = []
        for text in texts:
            words = text.lower().split() or ["<empty>"]
            v = np.mean([self._word(w) for w in words], axis=0)
            rows.append(v / np.linalg.norm(v) if normalize_embeddings else v)
        return np.array(rows)
