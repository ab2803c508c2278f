"""A score of our own: SemGrad combined with the likelihood scores.

A logistic regression predicts "this answer is wrong" from standardised features; its
predicted probability is the combined score (higher = more uncertain). The weights are
fitted on the calibration split only and applied unchanged to the evaluation split.
Fitting the same model without SemGrad tells whether the gradient carries information
the likelihood lacks.

>>> fit = CombinedScore.fit(calibration_records, LIKELIHOOD_FEATURES)  # doctest: +SKIP
>>> fit.score(evaluation_records)                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

LIKELIHOOD_FEATURES = ("nll", "nll_per_token", "mean_entropy", "max_prob")
SEMGRAD_FEATURES = ("semgrad", *LIKELIHOOD_FEATURES)
#: Heavy-tailed, strictly positive scores enter as logarithms.
LOG_FEATURES = frozenset({"semgrad", "semgrad_default", "hybridgrad", "hybridgrad_default", "nll"})

#: The combined scores a benchmark reports: name -> features.
COMBINED_SCORES: dict[str, tuple[str, ...]] = {
    "combined_likelihood": LIKELIHOOD_FEATURES,
    "combined_semgrad_likelihood": SEMGRAD_FEATURES,
}


def _matrix(records: Sequence[Mapping[str, Any]], features: Sequence[str]
            ) -> npt.NDArray[np.float64]:
    x = np.array([[float(r["scores"][f]) for f in features] for r in records], dtype=np.float64)
    for j, f in enumerate(features):
        if f in LOG_FEATURES:
            x[:, j] = np.log(np.maximum(x[:, j], 1e-12))
    return x


@dataclass(frozen=True)
class CombinedScore:
    """Standardisation and logistic-regression weights over named score features."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    fitted_on: int

    @classmethod
    def fit(cls, records: Sequence[Mapping[str, Any]], features: Sequence[str],
            regularisation: float = 1.0) -> CombinedScore:
        """Fit on labelled records (``record["correct"]``); wrong answers are the positives."""
        from sklearn.linear_model import LogisticRegression

        x = _matrix(records, features)
        y = np.array([not r["correct"] for r in records], dtype=int)
        if len(set(y.tolist())) < 2:
            raise ValueError("the combined score needs right and wrong answers to fit on")
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0
        model = LogisticRegression(C=regularisation, max_iter=1000)
        model.fit((x - mean) / std, y)
        return cls(tuple(features), tuple(map(float, mean)), tuple(map(float, std)),
                   tuple(map(float, model.coef_[0])), float(model.intercept_[0]), len(records))

    def score(self, records: Sequence[Mapping[str, Any]]) -> list[float]:
        """Predicted probability that each answer is wrong."""
        z = (_matrix(records, self.features) - np.array(self.mean)) / np.array(self.std)
        logits = z @ np.array(self.weights) + self.bias
        return [float(v) for v in 1.0 / (1.0 + np.exp(-logits))]

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "weights": dict(zip(self.features, self.weights,
                                                                      strict=True)),
                "bias": self.bias, "fitted_on": self.fitted_on,
                "log_features": sorted(set(self.features) & LOG_FEATURES)}
