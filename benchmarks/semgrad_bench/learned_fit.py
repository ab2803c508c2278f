"""The learned probability of error, as the benchmark fits it.

A regularised logistic regression over standardised features; its inverse regularisation
strength ``C`` is chosen by cross-validation on the training answers (mean AUROC within
populations, folds stratified by population and class). With ``balanced`` weights every
(population, class) cell carries the same total weight, so the model cannot learn a
population's base rate, only what separates right from wrong answers within one. A Platt
map fitted on out-of-fold decisions turns the decision into a probability of error
(isotonic regression on the same decisions is kept for comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from .metrics import population_auroc

FloatArray = npt.NDArray[np.float64]
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 6))
SEED = 0


def balanced_weights(wrong: npt.NDArray[np.int64], populations: npt.ArrayLike) -> FloatArray:
    """Weights giving every (population, class) cell the same total; they sum to the
    number of answers."""
    groups = np.asarray(populations)
    w = np.zeros(len(wrong))
    for g, c in {(g, c) for g, c in zip(groups, wrong, strict=True)}:
        m = (groups == g) & (wrong == c)
        w[m] = 1.0 / m.sum()
    return w * len(wrong) / w.sum()


@dataclass
class Logistic:
    """A standardised logistic regression's decision function."""

    mean: FloatArray
    std: FloatArray
    model: LogisticRegression

    @classmethod
    def fit(cls, X: FloatArray, wrong: npt.NDArray[np.int64], C: float,
            weights: FloatArray | None = None) -> Logistic:
        mean, std = X.mean(0), X.std(0)
        std[std == 0] = 1.0
        model = LogisticRegression(C=C, max_iter=5000)
        model.fit((X - mean) / std, wrong, sample_weight=weights)
        return cls(mean, std, model)

    def decision(self, X: FloatArray) -> FloatArray:
        return np.asarray(self.model.decision_function((X - self.mean) / self.std))


def _cells(wrong: npt.NDArray[np.int64], populations: npt.ArrayLike) -> list[str]:
    return [f"{g}-{c}" for g, c in zip(np.asarray(populations), wrong, strict=True)]


def cv_auroc(X: FloatArray, wrong: npt.NDArray[np.int64], populations: npt.ArrayLike, C: float,
             balanced: bool, folds: int = 3, seed: int = SEED) -> float:
    """Mean over folds of the held-out AUROC within populations."""
    groups = np.asarray(populations)
    values = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
            X, _cells(wrong, groups)):
        w = balanced_weights(wrong[tr], groups[tr]) if balanced else None
        d = Logistic.fit(X[tr], wrong[tr], C, w).decision(X[te])
        values.append(population_auroc(d, wrong[te] == 0, groups[te]))
    return float(np.mean(values))


@dataclass
class LearnedScore:
    """Fit with :meth:`fit`; :meth:`error_probability` is the calibrated output."""

    balanced: bool = True
    grid: tuple[float, ...] = C_GRID
    C: float = float("nan")
    cv_scores: dict[float, float] = field(default_factory=dict)
    model: Logistic | None = None
    platt: LogisticRegression | None = None
    isotonic: IsotonicRegression | None = None

    def fit(self, X: FloatArray, wrong: npt.NDArray[np.int64], populations: npt.ArrayLike,
            C: float | None = None) -> LearnedScore:
        groups = np.asarray(populations)
        if C is None:
            self.cv_scores = {c: cv_auroc(X, wrong, groups, c, self.balanced) for c in self.grid}
            C = max(self.cv_scores, key=lambda c: (self.cv_scores[c], -c))
        self.C = C
        weights = balanced_weights(wrong, groups) if self.balanced else None
        self.model = Logistic.fit(X, wrong, C, weights)
        out_of_fold = np.zeros(len(wrong))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=SEED + 2).split(
                X, _cells(wrong, groups)):
            w = balanced_weights(wrong[tr], groups[tr]) if self.balanced else None
            out_of_fold[te] = Logistic.fit(X[tr], wrong[tr], C, w).decision(X[te])
        self.platt = LogisticRegression(C=1e6).fit(out_of_fold[:, None], wrong)
        self.isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
            out_of_fold, wrong)
        return self

    def decision(self, X: FloatArray) -> FloatArray:
        assert self.model is not None, "fit first"
        return self.model.decision(X)

    def error_probability(self, X: FloatArray, method: str = "platt") -> FloatArray:
        assert self.platt is not None and self.isotonic is not None, "fit first"
        d = self.decision(X)
        if method == "isotonic":
            return np.asarray(self.isotonic.predict(d), dtype=np.float64)
        return np.asarray(self.platt.predict_proba(d[:, None])[:, 1], dtype=np.float64)
