"""Sampling-based uncertainty baselines over K sampled answers to one question.

All three are "higher = more uncertain" and use only the sampled texts:

- ``semantic_entropy``: **embedding-clustered semantic entropy, no NLI**. Samples are
  clustered greedily: a sample joins the first cluster whose first member has cosine
  similarity >= ``cluster_threshold`` (all-MiniLM-L6-v2) with it, else it opens a new
  cluster; the score is the entropy of the cluster frequencies (the discrete variant of
  Farquhar et al., 2024; no NLI model is available offline, so embedding similarity
  stands in for bidirectional entailment).
- ``lexical_similarity``: ``1 - mean pairwise ROUGE-L F1`` between the samples
  (normalised words).
- ``eigenscore``: EigenScore-style (Chen et al., 2024, INSIDE) on **MiniLM sentence
  embeddings**, not the model's hidden states: ``(1/K) * logdet(C + alpha*I)`` with
  ``C`` the K x K covariance (Gram matrix) of the centred, unit-normalised sample
  embeddings and ``alpha = 1e-3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import numpy.typing as npt

from semgrad_guard.calibration.judges import normalize_answer

#: Cosine similarity (MiniLM) at or above which two samples share a meaning cluster.
DEFAULT_CLUSTER_THRESHOLD = 0.8
#: Ridge added to the sample covariance before its log-determinant (INSIDE's alpha).
EIGENSCORE_ALPHA = 1e-3

SAMPLING_SCORES = ("semantic_entropy", "lexical_similarity", "eigenscore")


def semantic_clusters(embeddings: npt.NDArray[np.floating], threshold: float
                      = DEFAULT_CLUSTER_THRESHOLD) -> list[int]:
    """Cluster id of each sample (greedy, against each cluster's first member)."""
    heads: list[int] = []
    labels: list[int] = []
    for i, e in enumerate(embeddings):
        for c, h in enumerate(heads):
            if float(e @ embeddings[h]) >= threshold:
                labels.append(c)
                break
        else:
            heads.append(i)
            labels.append(len(heads) - 1)
    return labels


def semantic_entropy(embeddings: npt.NDArray[np.floating],
                     threshold: float = DEFAULT_CLUSTER_THRESHOLD) -> float:
    """Entropy (nats) of the meaning-cluster frequencies of unit-normalised embeddings."""
    labels = semantic_clusters(embeddings, threshold)
    counts = np.bincount(labels).astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts on normalised words (1 for two empty texts)."""
    x, y = normalize_answer(a).split(), normalize_answer(b).split()
    if not x and not y:
        return 1.0
    if not x or not y:
        return 0.0
    lcs = _lcs(x, y)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def lexical_similarity(samples: Sequence[str]) -> float:
    """``1 - mean pairwise ROUGE-L F1`` (0 when fewer than two samples)."""
    pairs = list(combinations(samples, 2))
    if not pairs:
        return 0.0
    return 1.0 - float(np.mean([rouge_l(a, b) for a, b in pairs]))


def eigenscore(embeddings: npt.NDArray[np.floating], alpha: float = EIGENSCORE_ALPHA) -> float:
    """``(1/K) logdet(C + alpha I)`` of the K x K covariance of the sample embeddings."""
    z = np.asarray(embeddings, dtype=np.float64)
    k = z.shape[0]
    centred = z - z.mean(axis=0, keepdims=True)
    cov = centred @ centred.T / max(k - 1, 1)
    _, logdet = np.linalg.slogdet(cov + alpha * np.eye(k))
    return float(logdet / k)


def sampling_scores(samples: Sequence[str], embeddings: npt.NDArray[np.floating],
                    cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD) -> dict[str, float]:
    """Every sampling baseline of one question's samples (embeddings unit-normalised)."""
    return {"semantic_entropy": semantic_entropy(embeddings, cluster_threshold),
            "lexical_similarity": lexical_similarity(samples),
            "eigenscore": eigenscore(embeddings)}
