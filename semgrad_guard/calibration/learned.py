"""Fitting the learned probability of error on labelled answers (calibration data only).

The recipe, chosen on the calibration splits by its worst domain under leave-one-domain-out
transfer (SciQ, TruthfulQA and a RAG-style set):

1. features: the likelihood statistics and the gradient summaries of the one pass
   (:func:`default_features`), heavy-tailed ones as logarithms, standardised;
2. a logistic regression with sample weights that give every (domain, class) cell the
   same total weight, so that it learns what separates right from wrong within a domain
   and not a domain's base rate; its regularisation ``C`` is chosen by cross-validation
   (mean within-domain AUROC);
3. Platt scaling of its out-of-fold log-odds to a probability of error;
4. the fallback, per-token NLL Platt-scaled, and an out-of-domain detector (Mahalanobis
   distance under a Ledoit-Wolf covariance, threshold at a high quantile of the
   calibration answers' out-of-fold distances);
5. nested cross-validation (``C`` chosen inside each outer fold) measures the learned
   score's AUROC within each domain beside the fallback's; the one with the better worst
   domain becomes the profile's ``primary`` score.

>>> import random
>>> rng = random.Random(0)
>>> rows, wrong = [], []
>>> for i in range(200):
...     bad = i % 2 == 0
...     rows.append({"nll_per_token": rng.gauss(1.5 if bad else 1.0, 0.5),
...                  "signal": rng.gauss(2.0 if bad else 0.0, 1.0)})
...     wrong.append(bad)
>>> fit = fit_learned_score(rows, wrong, ["toy"] * 200, features=["nll_per_token", "signal"])
>>> fit.score.coef[1] > fit.score.coef[0] > 0, fit.score.primary
(True, 'model')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DegenerateDataError
from ..scoring.learned import (
    FALLBACK_FEATURE,
    LIKELIHOOD_FEATURES,
    Fallback,
    LearnedScore,
    OutOfDomainDetector,
    Platt,
    default_transform,
    feature_matrix,
    feature_value,
    gradient_summary_features,
)
from .thresholds import fit_platt

#: Regularisation strengths tried (inverse L2 penalty of the logistic regression).
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 6))
#: Fewest labelled answers, and fewest of each class, a fit accepts.
MIN_ANSWERS = 30
MIN_PER_CLASS = 10
#: Out-of-domain threshold: this quantile of the calibration answers' distances.
OOD_QUANTILE = 0.99
_SEED = 0


def default_features(offsets: Sequence[int], default_offset: int) -> tuple[str, ...]:
    """The shipped feature set: likelihood statistics + gradient summaries."""
    return (*LIKELIHOOD_FEATURES, *gradient_summary_features(offsets, default_offset))


def _sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - installed with the calibrate extra
        raise ImportError("fitting a learned score needs scikit-learn: "
                          "pip install 'semgrad-guard[calibrate]'") from exc
    from sklearn import covariance, linear_model, metrics, model_selection
    return linear_model, model_selection, metrics, covariance


def check_labels(wrong: Sequence[bool], domains: Sequence[str]) -> None:
    """Refuse data a fit cannot learn from: too few answers, one class, or a domain with
    one class only (its within-domain AUROC would not exist)."""
    n, n_wrong = len(wrong), int(sum(bool(w) for w in wrong))
    if n < MIN_ANSWERS:
        raise DegenerateDataError(f"{n} labelled answers; a learned score needs at least "
                                  f"{MIN_ANSWERS}")
    for label, count in (("wrong", n_wrong), ("correct", n - n_wrong)):
        if count < MIN_PER_CLASS:
            raise DegenerateDataError(
                f"only {count} of {n} labelled answers are {label}; a learned score needs at "
                f"least {MIN_PER_CLASS} of each class")
    for domain in sorted(set(domains)):
        labels = {bool(w) for w, d in zip(wrong, domains, strict=True) if d == domain}
        if len(labels) < 2:
            raise DegenerateDataError(
                f"every answer of domain {domain!r} is {'wrong' if True in labels else 'correct'}"
                f"; each domain needs both correct and wrong answers")


def balanced_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each (domain, class) cell gets the same total weight (mean weight 1)."""
    w = np.zeros(len(y))
    for g, c in {(g, c) for g, c in zip(groups, y, strict=True)}:
        m = (groups == g) & (y == c)
        w[m] = 1.0 / m.sum()
    return w * len(y) / w.sum()


def within_domain_auroc(score: np.ndarray, y: np.ndarray, groups: np.ndarray
                        ) -> dict[str, float]:
    """AUROC (wrong answers positive) within each domain that has both classes."""
    metrics = _sklearn()[2]
    out = {}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        if len(set(y[m].tolist())) == 2:
            out[str(g)] = float(metrics.roc_auc_score(y[m], score[m]))
    return out


@dataclass
class _Standardised:
    mean: np.ndarray
    std: np.ndarray
    model: Any

    def decision(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.decision_function((x - self.mean) / self.std))


def _fit_logistic(x: np.ndarray, y: np.ndarray, groups: np.ndarray, C: float,
                  balanced: bool) -> _Standardised:
    linear_model = _sklearn()[0]
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    model = linear_model.LogisticRegression(C=C, max_iter=5000)
    model.fit((x - mean) / std, y, sample_weight=balanced_weights(y, groups) if balanced
              else None)
    return _Standardised(mean, std, model)


def _folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[Any, Any]]:
    model_selection = _sklearn()[1]
    cells = np.array([f"{g}-{c}" for g, c in zip(groups, y, strict=True)])
    k = max(2, min(k, int(np.unique(cells, return_counts=True)[1].min())))
    splitter = model_selection.StratifiedKFold(k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), cells))


def choose_C(x: np.ndarray, y: np.ndarray, groups: np.ndarray, balanced: bool = True,
             grid: Sequence[float] = C_GRID, folds: int = 3) -> tuple[float, dict[float, float]]:
    """The ``C`` with the best mean within-domain AUROC over ``folds``-fold
    cross-validation (the smaller ``C`` on a tie), and every ``C``'s figure."""
    splits = _folds(y, groups, folds, _SEED)
    scores = {}
    for C in grid:
        values = []
        for tr, te in splits:
            d = _fit_logistic(x[tr], y[tr], groups[tr], C, balanced).decision(x[te])
            values.append(np.mean(list(within_domain_auroc(d, y[te], groups[te]).values())))
        scores[float(C)] = float(np.mean(values))
    best = max(scores, key=lambda c: (scores[c], -c))
    return best, scores


@dataclass
class LearnedFit:
    """A fitted :class:`LearnedScore` and what the fit measured on the way."""

    score: LearnedScore
    cv_auroc: dict[str, dict[str, float]]
    C_scores: dict[float, float]
    out_of_fold: np.ndarray = field(repr=False)
    wrong: np.ndarray = field(repr=False)

    def out_of_fold_probability(self) -> np.ndarray:
        """Each calibration answer's probability of error from a fit that did not see it."""
        platt = self.score.platt
        return np.array([platt(float(d)) for d in self.out_of_fold])

    def pass_rates(self, thresholds: Sequence[float]) -> list[tuple[float, float, float]]:
        """For each ``max_error_probability``: the share of calibration answers that pass
        (out-of-fold probabilities) and the error rate among them (NaN when none pass)."""
        p = self.out_of_fold_probability()
        rows = []
        for t in thresholds:
            passed = p <= t
            rows.append((float(t), float(passed.mean()),
                         float(self.wrong[passed].mean()) if passed.any() else float("nan")))
        return rows


def data_fingerprint(rows: Sequence[Mapping[str, float]], wrong: Sequence[bool],
                     domains: Sequence[str]) -> str:
    """A short hash of the labelled data a fit saw (features, labels, domains)."""
    h = hashlib.sha256()
    for row, w, d in zip(rows, wrong, domains, strict=True):
        h.update(json.dumps([sorted((k, round(float(v), 6)) for k, v in row.items()),
                             bool(w), d]).encode())
    return h.hexdigest()[:16]


def fit_learned_score(rows: Sequence[Mapping[str, float]], wrong: Sequence[bool],
                      domains: Sequence[str], *, features: Sequence[str],
                      balanced: bool = True, grid: Sequence[float] = C_GRID,
                      folds: int = 5, quantile: float = OOD_QUANTILE,
                      fallback_feature: str = FALLBACK_FEATURE, judge: str = "") -> LearnedFit:
    """Fit the learned probability of error of answers with features ``rows``, labelled
    ``wrong`` (True = the answer is wrong), from calibration ``domains`` (one name per
    answer: a dataset, or ``"user"``). Raises :class:`DegenerateDataError` on data it
    cannot learn from."""
    covariance = _sklearn()[3]
    if not (len(rows) == len(wrong) == len(domains)):
        raise DegenerateDataError(f"{len(rows)} feature rows, {len(wrong)} labels and "
                                  f"{len(domains)} domains: one of each per answer")
    check_labels(wrong, domains)
    names = tuple(features)
    transforms = tuple(default_transform(n) for n in names)
    x = feature_matrix(rows, names, transforms)
    if not np.all(np.isfinite(x)):
        bad = names[int(np.argwhere(~np.isfinite(x))[0][1])]
        raise DegenerateDataError(f"feature {bad!r} is not finite for some answers")
    y = np.array([int(bool(w)) for w in wrong])
    groups = np.array([str(d) for d in domains])

    # Nested cross-validation: the AUROC a fit with C chosen on its own training folds
    # reaches on held-out answers, within each domain.
    per_fold: dict[str, list[float]] = {}
    for tr, te in _folds(y, groups, folds, _SEED + 1):
        C_inner, _ = choose_C(x[tr], y[tr], groups[tr], balanced, grid)
        d = _fit_logistic(x[tr], y[tr], groups[tr], C_inner, balanced).decision(x[te])
        for g, value in within_domain_auroc(d, y[te], groups[te]).items():
            per_fold.setdefault(g, []).append(value)
    fallback_values = np.array([feature_value(r, fallback_feature) for r in rows])
    cv = {"learned": {g: float(np.mean(v)) for g, v in per_fold.items()},
          # A monotone map of one feature: its AUROC needs no fit.
          "fallback": within_domain_auroc(fallback_values, y, groups)}

    C, C_scores = choose_C(x, y, groups, balanced, grid)
    final = _fit_logistic(x, y, groups, C, balanced)
    oof = np.zeros(len(y))
    for tr, te in _folds(y, groups, folds, _SEED + 2):
        oof[te] = _fit_logistic(x[tr], y[tr], groups[tr], C, balanced).decision(x[te])
    correct = ~y.astype(bool)
    platt = fit_platt(oof, correct)
    fallback = fit_platt(fallback_values, correct)

    z = (x - final.mean) / final.std
    distances = np.zeros(len(y))
    for tr, te in _folds(y, groups, folds, _SEED + 3):
        distances[te] = np.sqrt(covariance.LedoitWolf().fit(z[tr]).mahalanobis(z[te]))
    shrunk = covariance.LedoitWolf().fit(z)
    detector = OutOfDomainDetector(
        precision=tuple(tuple(float(v) for v in row) for row in shrunk.precision_),
        threshold=float(np.quantile(distances, quantile)), quantile=quantile,
        location=tuple(float(v) for v in shrunk.location_))

    primary = "model" if min(cv["learned"].values()) >= min(cv["fallback"].values()) \
        else "fallback"
    score = LearnedScore(
        features=names, transforms=transforms, mean=tuple(map(float, final.mean)),
        std=tuple(map(float, final.std)), coef=tuple(map(float, final.model.coef_[0])),
        intercept=float(final.model.intercept_[0]), C=C,
        platt=Platt(platt.coef, platt.intercept),
        fallback=Fallback(fallback.coef, fallback.intercept, fallback_feature),
        detector=detector, primary=primary,  # type: ignore[arg-type]
        domains=tuple(sorted(set(groups.tolist()))), n=len(y), n_wrong=int(y.sum()),
        judge=judge, data_fingerprint=data_fingerprint(rows, wrong, domains),
        balanced_weights=balanced, cv_auroc=cv)
    return LearnedFit(score, cv, C_scores, oof, y.astype(bool))
