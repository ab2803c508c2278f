"""Sampling baselines and the combined score."""

from __future__ import annotations

import numpy as np
import pytest

from semgrad_bench.combined import (
    LIKELIHOOD_FEATURES,
    SEMGRAD_FEATURES,
    CombinedScore,
)
from semgrad_bench.metrics import auroc
from semgrad_bench.sampling_baselines import (
    eigenscore,
    lexical_similarity,
    rouge_l,
    semantic_clusters,
    semantic_entropy,
)


def _unit(rows):
    x = np.asarray(rows, dtype=float)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_semantic_entropy_counts_meaning_clusters():
    same = _unit([[1, 0], [1, 0.01], [1, -0.01], [1, 0]])
    split = _unit([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert semantic_clusters(split) == [0, 0, 1, 1]
    assert semantic_entropy(same) == pytest.approx(0.0)
    assert semantic_entropy(split) == pytest.approx(np.log(2))


def test_rouge_l_and_lexical_similarity():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    # LCS("cat sat", "cat ran sat") = 2: precision 1, recall 2/3 -> F1 0.8.
    assert rouge_l("cat sat", "cat ran sat") == pytest.approx(0.8)
    assert lexical_similarity(["Paris", "paris", "Paris."]) == pytest.approx(0.0)
    assert lexical_similarity(["Paris", "Rome"]) == pytest.approx(1.0)


def test_eigenscore_grows_with_spread():
    rng = np.random.default_rng(0)
    tight = _unit(np.ones((5, 8)) + 0.01 * rng.standard_normal((5, 8)))
    spread = _unit(rng.standard_normal((5, 8)))
    assert eigenscore(spread) > eigenscore(tight)


def _records(n: int, seed: int) -> list[dict]:
    """Wrongness depends on a 'semgrad' signal that the likelihood features do not carry."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        signal = rng.normal()
        wrong = signal + 0.3 * rng.normal() > 0
        scores = {f: float(abs(rng.normal()) + 0.1) for f in LIKELIHOOD_FEATURES}
        scores["semgrad"] = float(np.exp(signal))
        out.append({"scores": scores, "correct": not wrong})
    return out


def test_combined_score_uses_the_gradient_when_it_carries_information():
    calibration, evaluation = _records(300, 1), _records(300, 2)
    with_grad = CombinedScore.fit(calibration, SEMGRAD_FEATURES)
    likelihood = CombinedScore.fit(calibration, LIKELIHOOD_FEATURES)
    labels = [r["correct"] for r in evaluation]
    assert auroc(with_grad.score(evaluation), labels) > 0.9
    assert auroc(likelihood.score(evaluation), labels) < 0.65
    weights = with_grad.to_dict()["weights"]
    assert weights["semgrad"] > 1.0 and "semgrad" in with_grad.to_dict()["log_features"]
    assert with_grad.fitted_on == 300


def test_combined_score_needs_both_classes():
    records = [{"scores": {f: 1.0 for f in SEMGRAD_FEATURES}, "correct": True}] * 4
    with pytest.raises(ValueError, match="right and wrong"):
        CombinedScore.fit(records, SEMGRAD_FEATURES)
