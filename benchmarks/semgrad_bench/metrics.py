"""How well a score finds wrong answers: AUROC, AUPR, PRR, curves and bootstrap CIs.

AUROC, AUPR and the ROC curve are scikit-learn's; PRR and the rejection curve are
written here (scikit-learn has neither).

"Incorrect" is the positive class and every score is "higher = more uncertain", so a
perfect score ranks every wrong answer above every right one (AUROC 1).

>>> auroc([0.9, 0.1, 0.8, 0.2], [False, True, False, True])
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

FloatArray = npt.NDArray[np.float64]


def _arrays(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
            ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    if s.shape != wrong.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {wrong.shape} must be equal-length vectors")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, wrong


def auroc(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
          ) -> float:
    """Probability that a random wrong answer scores above a random right one (ties 1/2):
    scikit-learn's ``roc_auc_score`` with the wrong answers as positives.

    NaN when only one class is present.
    """
    s, wrong = _arrays(scores, correct)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, s))


def aupr(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
         ) -> float:
    """Average precision for finding wrong answers: scikit-learn's
    ``average_precision_score`` (step-wise; tied scores enter together).

    NaN when there is no wrong answer.
    """
    s, wrong = _arrays(scores, correct)
    if not wrong.any():
        return float("nan")
    return float(average_precision_score(wrong, s))


def rejection_curve(scores: Sequence[float] | npt.ArrayLike,
                    correct: Sequence[bool] | npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Risk (error rate of the kept answers) against rejection rate 0..(n-1)/n.

    Answers are rejected most-uncertain first; ties are averaged over their run.
    """
    s, wrong = _arrays(scores, correct)
    n = len(s)
    order = np.argsort(-s, kind="mergesort")
    w = wrong[order].astype(np.float64)
    # Ties: spread the errors of a run of equal scores evenly over it.
    s_sorted = s[order]
    start = 0
    for end in [*np.nonzero(np.diff(s_sorted))[0] + 1, n]:
        w[start:end] = w[start:end].mean()
        start = end
    kept_errors = w.sum() - np.r_[0.0, np.cumsum(w)[:-1]]
    kept = n - np.arange(n)
    return np.arange(n) / n, kept_errors / kept


def prr(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
        ) -> float:
    """Prediction rejection ratio: the area between the random and the score's
    rejection curves over the area between the random and the oracle's.

    1 is an oracle, 0 is random, negative is worse than random. NaN with one class.
    """
    s, wrong = _arrays(scores, correct)
    if wrong.all() or not wrong.any():
        return float("nan")
    base = wrong.mean()
    _, risk = rejection_curve(s, ~wrong)
    _, oracle = rejection_curve(wrong.astype(np.float64), ~wrong)
    area, best = float((base - risk).mean()), float((base - oracle).mean())
    return area / best


def roc_points(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
               ) -> tuple[FloatArray, FloatArray]:
    """False- and true-positive rates (positive = wrong answer) at every threshold, from
    (0, 0) to (1, 1)."""
    s, wrong = _arrays(scores, correct)
    if wrong.all() or not wrong.any():  # one class: the diagonal
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = roc_curve(wrong, s, drop_intermediate=False)
    return fpr.astype(np.float64), tpr.astype(np.float64)


Metric = Callable[[npt.ArrayLike, npt.ArrayLike], float]
METRICS: dict[str, Metric] = {"auroc": auroc, "aupr": aupr, "prr": prr}


@dataclass(frozen=True)
class Estimate:
    """A metric on the whole sample with its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(metric: Metric, scores: Sequence[float] | npt.ArrayLike,
              correct: Sequence[bool] | npt.ArrayLike, *, resamples: int = 1000,
              level: float = 0.95, seed: int = 0) -> Estimate:
    """The metric with a percentile bootstrap interval (answers resampled with replacement;
    resamples with one class only are skipped)."""
    s, wrong = _arrays(scores, correct)
    value = metric(s, ~wrong)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(s), len(s))
        w = wrong[idx]
        if w.all() or not w.any():
            continue
        values.append(metric(s[idx], ~w))
    if not values:
        return Estimate(value, float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Estimate(value, float(low), float(high))
