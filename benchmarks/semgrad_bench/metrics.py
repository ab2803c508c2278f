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


# -- Populations, paired differences, calibration, length -------------------------------
# A set may mix source populations with different error rates (the RAG-style set mixes
# SciQ-derived and TruthfulQA-derived questions). A pooled AUROC would credit any score
# that tells the populations apart, so these functions take the mean of the AUROCs within
# each population and resample within each population.


def _population_indices(strata: npt.ArrayLike | None, n: int) -> list[npt.NDArray[np.intp]]:
    if strata is None:
        return [np.arange(n)]
    s = np.asarray(strata)
    if s.shape != (n,):
        raise ValueError(f"strata {s.shape} must have one entry per answer ({n})")
    return [np.flatnonzero(s == v) for v in np.unique(s)]


def _rank_auroc(s: FloatArray, wrong: npt.NDArray[np.bool_]) -> float:
    """AUROC by the Mann-Whitney statistic on average ranks (ties count one half);
    equal to scikit-learn's, and fast enough for thousands of resamples."""
    from scipy.stats import rankdata

    n_wrong = int(wrong.sum())
    n_right = len(wrong) - n_wrong
    if n_wrong == 0 or n_right == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[wrong].sum() - n_wrong * (n_wrong + 1) / 2) / (n_wrong * n_right))


def population_auroc(scores: npt.ArrayLike, correct: npt.ArrayLike,
                     strata: npt.ArrayLike | None = None) -> float:
    """The mean over populations (``strata``) of the AUROC within each; the plain AUROC
    when ``strata`` is None. NaN when a population has one class only."""
    s, wrong = _arrays(scores, correct)
    return float(np.mean([_rank_auroc(s[i], wrong[i])
                          for i in _population_indices(strata, len(s))]))


def _resamples(strata: npt.ArrayLike | None, n: int, resamples: int, seed: int
               ) -> list[npt.NDArray[np.intp]]:
    """Bootstrap index vectors, each population resampled within itself."""
    groups = _population_indices(strata, n)
    rng = np.random.default_rng(seed)
    return [np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
            for _ in range(resamples)]


def _interval(values: Sequence[float], level: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_auroc(scores: npt.ArrayLike, correct: npt.ArrayLike,
                    strata: npt.ArrayLike | None = None, *, resamples: int = 2000,
                    level: float = 0.95, seed: int = 0) -> Estimate:
    """:func:`population_auroc` with a percentile bootstrap interval (answers resampled
    with replacement within each population; resamples with one class are skipped)."""
    s, wrong = _arrays(scores, correct)
    st = None if strata is None else np.asarray(strata)
    values = [population_auroc(s[i], ~wrong[i], None if st is None else st[i])
              for i in _resamples(st, len(s), resamples, seed)]
    return Estimate(population_auroc(s, ~wrong, st), *_interval(values, level))


@dataclass(frozen=True)
class Difference:
    """AUROC(a) - AUROC(b) on the same answers, its paired-bootstrap percentile interval,
    and the share of resamples in which the difference is <= 0 (a one-sided bootstrap
    p-value for "a beats b")."""

    value: float
    low: float
    high: float
    share_not_above: float

    def __str__(self) -> str:
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(a: npt.ArrayLike, b: npt.ArrayLike, correct: npt.ArrayLike,
                      strata: npt.ArrayLike | None = None, *, resamples: int = 2000,
                      level: float = 0.95, seed: int = 0) -> Difference:
    """Paired bootstrap of ``AUROC(a) - AUROC(b)``: both scores are evaluated on the same
    resampled answers, so what the two scores share cancels out of the interval."""
    sa, wrong = _arrays(a, correct)
    sb, _ = _arrays(b, correct)
    st = None if strata is None else np.asarray(strata)
    diffs = []
    for i in _resamples(st, len(sa), resamples, seed):
        sub = None if st is None else st[i]
        diffs.append(population_auroc(sa[i], ~wrong[i], sub)
                     - population_auroc(sb[i], ~wrong[i], sub))
    d = np.asarray(diffs)
    d = d[~np.isnan(d)]
    value = population_auroc(sa, ~wrong, st) - population_auroc(sb, ~wrong, st)
    return Difference(value, *_interval(d, level), float((d <= 0).mean()) if len(d) else
                      float("nan"))


def _bins(p: FloatArray, bins: int) -> npt.NDArray[np.intp]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)


def _probabilities(probabilities: npt.ArrayLike, correct: npt.ArrayLike
                   ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    p, wrong = _arrays(probabilities, correct)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    return p, wrong


def expected_calibration_error(error_probability: npt.ArrayLike, correct: npt.ArrayLike,
                               bins: int = 10) -> float:
    """ECE of a predicted probability of error: over equal-width bins of the prediction,
    the answer-weighted mean of |mean prediction - observed share wrong|."""
    p, wrong = _probabilities(error_probability, correct)
    k = _bins(p, bins)
    return float(sum(abs(p[k == b].mean() - wrong[k == b].mean()) * (k == b).mean()
                     for b in range(bins) if (k == b).any()))


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram."""

    low: float
    high: float
    answers: int
    mean_predicted: float
    observed_wrong: float


def reliability_bins(error_probability: npt.ArrayLike, correct: npt.ArrayLike,
                     bins: int = 10) -> list[ReliabilityBin]:
    """The non-empty equal-width bins of the predicted probability of error."""
    p, wrong = _probabilities(error_probability, correct)
    k = _bins(p, bins)
    return [ReliabilityBin(b / bins, (b + 1) / bins, int((k == b).sum()),
                           float(p[k == b].mean()), float(wrong[k == b].mean()))
            for b in range(bins) if (k == b).any()]


@dataclass(frozen=True)
class LengthBand:
    """AUROC within one band of answer lengths (in tokens)."""

    shortest: int
    longest: int
    answers: int
    wrong_share: float
    auroc: float


def length_thirds(scores: npt.ArrayLike, correct: npt.ArrayLike, tokens: npt.ArrayLike,
                  bands: int = 3) -> list[LengthBand]:
    """AUROC within the shortest, middle and longest third of the answers (sorted by
    length, ties kept in answer order, split into near-equal counts): what a score finds
    beyond answer length itself."""
    s, wrong = _arrays(scores, correct)
    t = np.asarray(tokens)
    if t.shape != s.shape:
        raise ValueError(f"tokens {t.shape} must have one entry per answer {s.shape}")
    order = np.argsort(t, kind="mergesort")
    return [LengthBand(int(t[g].min()), int(t[g].max()), len(g), float(wrong[g].mean()),
                       _rank_auroc(s[g], wrong[g]))
            for g in np.array_split(order, bands)]
