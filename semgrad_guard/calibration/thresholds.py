"""Threshold fitting on labelled answers: pure functions of scores and correctness.

Every score is "higher = more uncertain" and an answer passes when its score is **at or
under** the threshold, as the policy layer decides. Three fits:

- :func:`threshold_for_error`: the most permissive threshold that keeps the error rate
  among the passed answers at or under a target;
- :func:`threshold_for_coverage`: the strictest threshold that still passes a target
  fraction of the answers;
- :func:`fit_platt`: a calibrated probability of error, a logistic regression on the
  score (Platt scaling), fitted by Newton's method in numpy.

>>> scores = [0.1, 0.2, 0.3, 0.4]
>>> correct = [True, True, False, False]
>>> threshold_for_error(scores, correct, target_error=0.0).threshold
0.2
>>> threshold_for_coverage(scores, target_coverage=0.75).threshold
0.3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import CalibrationError

_MAX_NEWTON_STEPS = 100
_TOLERANCE = 1e-10

#: The fewest labelled answers a threshold and its calibration are fitted on ...
MIN_LABELLED = 30
#: ... and the fewest right and the fewest wrong answers among them.
MIN_EACH_KIND = 5


@dataclass(frozen=True)
class ThresholdFit:
    """A fitted threshold and what it does on the data it was fitted on.

    ``coverage`` is the fraction of answers that pass (score <= threshold);
    ``error_rate`` the fraction of wrong answers among them (``None`` without labels);
    ``base_error_rate`` the fraction of wrong answers overall.
    """

    threshold: float
    coverage: float
    error_rate: float | None
    n: int
    n_passed: int
    base_error_rate: float | None
    target: str
    target_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlattFit:
    """``p(wrong | score) = 1 / (1 + exp(-(coef * f(score) + intercept)))``, where ``f``
    is the identity or, with ``transform="log"``, the natural logarithm."""

    coef: float
    intercept: float
    n: int
    n_wrong: int
    log_loss: float
    transform: str = "identity"

    def error_probability(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The calibrated probability of error of each score."""
        return platt_error_probability(scores, self.coef, self.intercept, self.transform)

    def score_at(self, probability: float) -> float:
        """The score whose probability of error is ``probability`` (the inverse map)."""
        if not 0.0 < probability < 1.0:
            raise CalibrationError(f"probability must be in (0, 1), got {probability}")
        if self.coef == 0.0:
            raise CalibrationError("the calibration is flat (coef 0): no score maps to a "
                                   "probability")
        x = (math.log(probability / (1.0 - probability)) - self.intercept) / self.coef
        return math.exp(x) if self.transform == "log" else x

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def platt_error_probability(scores: npt.ArrayLike, coef: float, intercept: float,
                            transform: str = "identity") -> npt.NDArray[np.float64]:
    """Platt scaling: ``1 / (1 + exp(-(coef * f(score) + intercept)))`` for each score,
    with ``f`` the identity or (``transform="log"``) the natural logarithm, whose
    ``log(0) = -inf`` gives the probability's limit.

    The one place the formula is written: fitted calibrations (:class:`PlattFit`) and
    the policy file's (``PlattCalibration``) both call it.

    >>> platt_error_probability([0.0, 1.0], coef=math.log(3), intercept=0.0).round(6)
    array([0.5 , 0.75])
    """
    x = np.asarray(scores, dtype=np.float64)
    if transform == "log":
        with np.errstate(divide="ignore"):
            x = np.log(np.clip(x, 0.0, None))
    with np.errstate(invalid="ignore"):
        z = coef * x + intercept
    # log(0) = -inf: the probability's limit, not NaN, when coef is 0.
    return _sigmoid(np.atleast_1d(np.nan_to_num(z, nan=intercept))).reshape(np.shape(z))


def _arrays(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
            | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_] | None]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise CalibrationError("no scores to fit on")
    if not np.all(np.isfinite(s)):
        raise CalibrationError(f"{int((~np.isfinite(s)).sum())} scores are not finite")
    if correct is None:
        return s, None
    c = np.asarray(correct).reshape(-1)
    if c.shape != s.shape:
        raise CalibrationError(f"{s.size} scores but {c.size} correctness labels")
    if c.dtype != np.bool_:
        if not np.all(np.isin(c, (0, 1))):
            raise CalibrationError("correctness labels must be booleans (or 0/1)")
        c = c.astype(bool)
    return s, c


def _labelled(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike
              ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    s, c = _arrays(scores, correct)
    if c is None:  # pragma: no cover - _arrays keeps the labels it is given
        raise CalibrationError("correctness labels are required")
    return s, c


def _summary(s: npt.NDArray[np.float64], c: npt.NDArray[np.bool_] | None, threshold: float,
             target: str, value: float) -> ThresholdFit:
    passed = s <= threshold
    n_passed = int(passed.sum())
    error_rate = base = None
    if c is not None:
        base = float((~c).mean())
        error_rate = float((~c[passed]).mean()) if n_passed else 0.0
    return ThresholdFit(threshold=float(threshold), coverage=n_passed / s.size,
                        error_rate=error_rate, n=int(s.size), n_passed=n_passed,
                        base_error_rate=base, target=target, target_value=float(value))


def threshold_for_error(scores: Sequence[float] | npt.ArrayLike,
                        correct: Sequence[bool] | npt.ArrayLike, target_error: float
                        ) -> ThresholdFit:
    """The largest threshold whose passed answers have an error rate <= ``target_error``.

    The threshold is one of the scores (the highest that passes), and answers with equal
    scores pass or fail together. Raises :class:`CalibrationError` when even the
    lowest-scoring answers are wrong more often than the target.

    >>> fit = threshold_for_error([0.1, 0.2, 0.3, 0.4], [True, False, True, False], 0.4)
    >>> fit.threshold, fit.coverage, fit.error_rate
    (0.3, 0.75, 0.3333333333333333)
    """
    if not 0.0 <= target_error <= 1.0:
        raise CalibrationError(f"target_error must be in [0, 1], got {target_error}")
    s, c = _labelled(scores, correct)
    order = np.argsort(s, kind="stable")
    s_sorted, wrong_sorted = s[order], (~c[order]).astype(np.float64)
    # Only the last answer of each run of equal scores is a possible cut.
    last_of_value = np.append(s_sorted[1:] != s_sorted[:-1], True)
    passed = np.arange(1, s.size + 1)
    error_rate = np.cumsum(wrong_sorted) / passed
    ok = last_of_value & (error_rate <= target_error + 1e-12)
    if not ok.any():
        first = int(np.argmax(last_of_value))
        raise CalibrationError(
            f"no threshold keeps the error rate at or under {target_error:g}: the "
            f"{first + 1} lowest-scoring answers already have an error rate of "
            f"{error_rate[first]:.3f}")
    cut = int(np.flatnonzero(ok)[-1])
    return _summary(s, c, float(s_sorted[cut]), "target_error", target_error)


def threshold_for_coverage(scores: Sequence[float] | npt.ArrayLike, target_coverage: float,
                           correct: Sequence[bool] | npt.ArrayLike | None = None
                           ) -> ThresholdFit:
    """The smallest threshold that passes at least ``target_coverage`` of the answers.

    With labels, the fit also reports the error rate among the passed answers.

    >>> threshold_for_coverage([0.4, 0.1, 0.3, 0.2], 0.5).threshold
    0.2
    """
    if not 0.0 < target_coverage <= 1.0:
        raise CalibrationError(f"target_coverage must be in (0, 1], got {target_coverage}")
    s, c = _arrays(scores, correct)
    s_sorted = np.sort(s)
    needed = max(1, math.ceil(target_coverage * s.size - 1e-9))
    return _summary(s, c, float(s_sorted[needed - 1]), "target_coverage", target_coverage)


def check_labelled(correct: Sequence[bool] | npt.ArrayLike, *, minimum: int = MIN_LABELLED,
                   each_kind: int = MIN_EACH_KIND) -> None:
    """Refuse to fit on too few labelled answers: a threshold and a probability of error
    from a handful of answers say more about the handful than about the model.

    >>> check_labelled([True, False, True, False])
    Traceback (most recent call last):
    ...
    semgrad_guard.errors.CalibrationError: a fit needs at least 30 labelled answers, at least 5 of them right and 5 wrong; got 4 (2 right, 2 wrong): label more questions
    """
    c = np.asarray(correct, dtype=bool).reshape(-1)
    right, wrong = int(c.sum()), int((~c).sum())
    if c.size < minimum or right < each_kind or wrong < each_kind:
        raise CalibrationError(
            f"a fit needs at least {minimum} labelled answers, at least {each_kind} of them "
            f"right and {each_kind} wrong; got {c.size} ({right} right, {wrong} wrong): "
            "label more questions")


def check_rising(fit: PlattFit, score: str = "score") -> None:
    """Refuse a calibration in which a higher score means fewer errors.

    Every score is "higher = more uncertain"; a fit whose slope is zero or negative
    says the score does not rank these answers' errors, and a threshold on it would pass
    the answers most likely to be wrong.

    >>> check_rising(PlattFit(coef=-2.0, intercept=0.1, n=40, n_wrong=12, log_loss=0.6),
    ...              "nll")
    Traceback (most recent call last):
    ...
    semgrad_guard.errors.CalibrationError: on these 40 labelled answers a higher nll goes with fewer errors (Platt slope -2): nll does not rank this model's errors here, and a threshold on it would pass the answers most likely to be wrong; fit another score, or on more data
    """
    if not fit.coef > 0:
        trend = "fewer errors" if fit.coef < 0 else "no more errors"
        raise CalibrationError(
            f"on these {fit.n} labelled answers a higher {score} goes with {trend} (Platt "
            f"slope {fit.coef:.4g}): {score} does not rank this model's errors here, and a "
            f"threshold on it would pass the answers most likely to be wrong; fit another "
            f"score, or on more data")


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def fit_platt(scores: Sequence[float] | npt.ArrayLike, correct: Sequence[bool] | npt.ArrayLike,
              *, smoothing: bool = True, transform: str = "identity") -> PlattFit:
    """Fit ``p(wrong | score)`` by logistic regression on the score (Platt scaling).

    With ``smoothing`` (Platt, 1999) the targets are ``(N_wrong + 1) / (N_wrong + 2)``
    for wrong answers and ``1 / (N_right + 2)`` for right ones instead of 1 and 0, so
    that separable data still gives a finite fit. The fit runs on standardised scores
    (for conditioning) and is mapped back to raw scores. ``transform="log"`` fits on
    the logarithm of the score instead, which suits heavy-tailed positive scores such as
    gradient norms (a few very large values otherwise decide the slope).

    Two score values, wrong half the time at 0 and three times in four at 1, give
    ``intercept = logit(1/2) = 0`` and ``coef + intercept = logit(3/4) = ln 3``:

    >>> fit = fit_platt([0, 0, 1, 1, 1, 1], [True, False, False, False, False, True],
    ...                 smoothing=False)
    >>> round(fit.intercept, 6), round(fit.coef, 6)
    (0.0, 1.098612)
    """
    s, c = _labelled(scores, correct)
    if transform not in ("identity", "log"):
        raise CalibrationError(f"transform {transform!r} is not one of 'identity', 'log'")
    if transform == "log":
        if np.any(s <= 0):
            raise CalibrationError("transform 'log' needs positive scores; "
                                   f"{int((s <= 0).sum())} are zero or negative")
        s = np.log(s)
    wrong = ~c
    n_wrong, n_right = int(wrong.sum()), int(c.sum())
    if smoothing:
        target = np.where(wrong, (n_wrong + 1.0) / (n_wrong + 2.0), 1.0 / (n_right + 2.0))
    else:
        target = wrong.astype(np.float64)
    mean, std = float(s.mean()), float(s.std())
    if std == 0.0 or not np.isfinite(std):
        raise CalibrationError("every score is the same: a calibration needs scores that vary")
    x = (s - mean) / std
    design = np.stack([x, np.ones_like(x)], axis=1)
    beta = np.zeros(2)
    # A tiny ridge keeps Newton's steps finite on separable data without smoothing; the
    # fitted probabilities then saturate at 1 - 1e-16 rather than diverge.
    ridge = 1e-12 * np.eye(2)
    for _ in range(_MAX_NEWTON_STEPS):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - target)
        weights = np.clip(p * (1.0 - p), 1e-16, None)
        hessian = design.T @ (design * weights[:, None]) + ridge
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.max(np.abs(step)) < _TOLERANCE:
            break
        if np.max(np.abs(beta)) > 1e3:  # saturated: separable data without smoothing
            break
    coef = float(beta[0] / std)
    intercept = float(beta[1] - beta[0] * mean / std)
    p = np.clip(_sigmoid(design @ beta), 1e-15, 1 - 1e-15)
    loss = float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))
    return PlattFit(coef=coef, intercept=intercept, n=int(s.size), n_wrong=n_wrong,
                    log_loss=loss, transform=transform)
