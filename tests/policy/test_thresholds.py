"""Threshold fitting on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semgrad_guard.calibration.thresholds import (
    fit_platt,
    threshold_for_coverage,
    threshold_for_error,
)
from semgrad_guard.errors import CalibrationError

SCORES = [0.1, 0.2, 0.3, 0.4, 0.5]
CORRECT = [True, True, False, True, False]
# Passing the k lowest: errors 0, 0, 1, 1, 2 -> error rates 0, 0, 1/3, 1/4, 2/5.


@pytest.mark.parametrize(("target", "threshold", "coverage", "error_rate"), [
    (0.0, 0.2, 0.4, 0.0),
    (0.2, 0.2, 0.4, 0.0),      # 1/4 at 0.4 is over 0.2
    (0.25, 0.4, 0.8, 0.25),    # at the target counts as under it
    (0.3, 0.4, 0.8, 0.25),
    (0.4, 0.5, 1.0, 0.4),
    (1.0, 0.5, 1.0, 0.4),
])
def test_threshold_for_error(target: float, threshold: float, coverage: float,
                             error_rate: float) -> None:
    fit = threshold_for_error(SCORES, CORRECT, target)
    assert fit.threshold == threshold
    assert fit.coverage == pytest.approx(coverage)
    assert fit.error_rate == pytest.approx(error_rate)
    assert fit.base_error_rate == pytest.approx(0.4)
    assert (fit.n, fit.target, fit.target_value) == (5, "target_error", target)


def test_threshold_for_error_ignores_order() -> None:
    order = [3, 0, 4, 2, 1]
    fit = threshold_for_error([SCORES[i] for i in order], [CORRECT[i] for i in order], 0.25)
    assert fit.threshold == 0.4


def test_threshold_for_error_keeps_ties_together() -> None:
    # 0.2 appears twice, once wrong: cutting between them is impossible, so with a zero
    # target only 0.1 passes, even though the first 0.2 alone would be right.
    fit = threshold_for_error([0.1, 0.2, 0.2, 0.3], [True, True, False, True], 0.0)
    assert (fit.threshold, fit.n_passed) == (0.1, 1)
    fit = threshold_for_error([0.1, 0.2, 0.2, 0.3], [True, True, False, True], 0.34)
    assert (fit.threshold, fit.n_passed, fit.error_rate) == (0.3, 4, 0.25)


def test_threshold_for_error_without_any_safe_cut() -> None:
    with pytest.raises(CalibrationError, match="1 lowest-scoring answers already have an "
                                               "error rate of 1.000"):
        threshold_for_error([0.1, 0.2], [False, True], 0.4)


@pytest.mark.parametrize(("target", "threshold", "n_passed"), [
    (0.2, 0.1, 1), (0.6, 0.3, 3), (0.61, 0.4, 4), (1.0, 0.5, 5), (0.01, 0.1, 1),
])
def test_threshold_for_coverage(target: float, threshold: float, n_passed: int) -> None:
    fit = threshold_for_coverage([0.4, 0.1, 0.3, 0.2, 0.5], target)
    assert (fit.threshold, fit.n_passed) == (threshold, n_passed)
    assert fit.error_rate is None


def test_threshold_for_coverage_reports_the_error_rate_with_labels() -> None:
    fit = threshold_for_coverage(SCORES, 0.8, CORRECT)
    assert (fit.threshold, fit.coverage, fit.error_rate) == (0.4, 0.8, 0.25)


def test_platt_fit_on_two_score_values_is_the_empirical_error_rate() -> None:
    # With two distinct scores the logistic model is saturated: the fitted probability at
    # each score is the (smoothed) error rate there. Wrong: 1 of 2 at 0.0, 2 of 2 at 1.0.
    # Platt's targets: wrong (3+1)/(3+2) = 4/5, right 1/(1+2) = 1/3.
    fit = fit_platt([0.0, 0.0, 1.0, 1.0], [True, False, False, False])
    at_zero = (1 / 3 + 4 / 5) / 2
    assert fit.intercept == pytest.approx(math.log(at_zero / (1 - at_zero)), abs=1e-8)
    assert fit.coef + fit.intercept == pytest.approx(math.log(4.0), abs=1e-8)
    assert fit.error_probability([0.0, 1.0]) == pytest.approx([at_zero, 0.8])
    assert (fit.n, fit.n_wrong) == (4, 3)


def test_platt_fit_without_smoothing_and_on_scaled_scores() -> None:
    # Wrong 1 of 4 at 0.01 and 3 of 4 at 0.03: logit(1/4) = -ln 3, logit(3/4) = ln 3,
    # so coef = 2 ln 3 / 0.02 and p = 1/2 at 0.02. Scores this small are SemGrad's scale.
    scores = [0.01] * 4 + [0.03] * 4
    correct = [False, True, True, True, False, False, False, True]
    fit = fit_platt(scores, correct, smoothing=False)
    assert fit.coef == pytest.approx(2 * math.log(3) / 0.02, rel=1e-8)
    assert fit.score_at(0.5) == pytest.approx(0.02, rel=1e-8)
    assert fit.error_probability([0.01])[0] == pytest.approx(0.25)


def test_platt_fit_is_finite_on_separable_data() -> None:
    fit = fit_platt([0.1, 0.2, 0.3, 0.4], [True, True, False, False])
    assert np.isfinite([fit.coef, fit.intercept]).all() and fit.coef > 0
    p = fit.error_probability([0.1, 0.4])
    assert p[0] < 0.5 < p[1]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: threshold_for_error([0.1, 0.2], [True], 0.1), "2 scores but 1 correctness"),
    (lambda: threshold_for_error([0.1, float("nan")], [True, True], 0.1), "not finite"),
    (lambda: threshold_for_error([], [], 0.1), "no scores"),
    (lambda: threshold_for_error([0.1], [True], 1.5), "target_error must be in"),
    (lambda: threshold_for_coverage([0.1], 0.0), "target_coverage must be in"),
    (lambda: threshold_for_error([0.1], [2], 0.1), "booleans"),
    (lambda: fit_platt([0.2, 0.2], [True, False]), "every score is the same"),
])
def test_bad_input_is_a_calibration_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CalibrationError, match=message):
        call()


def test_platt_fit_on_the_log_of_the_score() -> None:
    # The grouped case above at scores 1 and e: on the log scale the points are 0 and 1,
    # so intercept = logit(1/4) = -ln 3 and coef = 2 ln 3.
    scores = [1.0] * 4 + [math.e] * 4
    correct = [False, True, True, True, False, False, False, True]
    fit = fit_platt(scores, correct, smoothing=False, transform="log")
    assert fit.transform == "log"
    assert fit.intercept == pytest.approx(-math.log(3), abs=1e-8)
    assert fit.coef == pytest.approx(2 * math.log(3), abs=1e-8)
    assert fit.error_probability([math.e])[0] == pytest.approx(0.75)
    assert fit.score_at(0.5) == pytest.approx(math.exp(0.5), rel=1e-8)
    assert fit.error_probability([0.0])[0] == 0.0  # log(0) = -inf, coef > 0
    with pytest.raises(CalibrationError, match="needs positive scores; 1 are zero"):
        fit_platt([0.0, 1.0], [True, False], transform="log")
    with pytest.raises(CalibrationError, match="transform 'sqrt'"):
        fit_platt([0.5, 1.0], [True, False], transform="sqrt")


def test_the_policy_calibration_agrees_with_the_fit() -> None:
    from semgrad_guard.policy import PlattCalibration

    scores = [0.001, 0.002, 0.004, 0.02, 0.03, 0.05]
    correct = [True, True, False, True, False, False]
    for transform in ("identity", "log"):
        fit = fit_platt(scores, correct, transform=transform)
        stored = PlattCalibration.model_validate({
            "score": "semgrad", "transform": transform, "coef": fit.coef,
            "intercept": fit.intercept})
        for value in scores:
            assert stored.error_probability(value) == pytest.approx(
                float(fit.error_probability([value])[0]), rel=1e-12)
