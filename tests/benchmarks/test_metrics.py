"""AUROC, AUPR and PRR against hand-computed cases (wrong answers are the positives)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semgrad_bench.metrics import (
    aupr,
    auroc,
    bootstrap,
    prr,
    rejection_curve,
    roc_points,
)

# Scores of four answers; the first two are wrong (correct=False).
CORRECT = [False, False, True, True]


def test_auroc_perfect_inverted_and_ties():
    assert auroc([4, 3, 2, 1], CORRECT) == 1.0
    assert auroc([1, 2, 3, 4], CORRECT) == 0.0
    assert auroc([1, 1, 1, 1], CORRECT) == 0.5
    # Wrong answers score 3 and 1, right ones 2 and 0: pairs (3>2, 3>0, 1<2, 1>0) = 3/4.
    assert auroc([3, 1, 2, 0], CORRECT) == 0.75
    # A tie between a wrong and a right answer counts one half: (1 + 0.5) / 2.
    assert auroc([2, 1, 1, 0], [False, True, False, True]) == pytest.approx(0.875)


def test_auroc_needs_both_classes():
    assert math.isnan(auroc([1, 2], [True, True]))


def test_aupr_by_hand():
    assert aupr([4, 3, 2, 1], CORRECT) == 1.0
    # Ranked: wrong(3), right(2), wrong(1), right(0): precision 1 at recall 1/2,
    # 2/3 at recall 1 -> AP = 0.5 * 1 + 0.5 * 2/3.
    assert aupr([3, 1, 2, 0], CORRECT) == pytest.approx(0.5 + 1 / 3)


def test_rejection_curve_by_hand():
    rejection, risk = rejection_curve([3, 1, 2, 0], CORRECT)
    assert rejection.tolist() == [0.0, 0.25, 0.5, 0.75]
    # Keep all (2 of 4 wrong), drop wrong(3) -> 1/3, drop right(2) -> 1/2, drop wrong(1) -> 0.
    assert risk == pytest.approx([0.5, 1 / 3, 0.5, 0.0])


def test_prr_oracle_random_and_inverse():
    assert prr([4, 3, 2, 1], CORRECT) == pytest.approx(1.0)
    assert prr([1, 2, 3, 4], CORRECT) == pytest.approx(-1.0)
    assert prr([1, 1, 1, 1], CORRECT) == pytest.approx(0.0)
    # Oracle area: mean(0.5-[0.5, 1/3, 0, 0]) = 2/3 / 4; this score: mean(0.5-[.5,1/3,.5,0]).
    assert prr([3, 1, 2, 0], CORRECT) == pytest.approx((1 / 6 + 0.5) / (1 / 6 + 0.5 + 0.5))


def test_roc_points_end_at_one():
    fpr, tpr = roc_points([3, 1, 2, 0], CORRECT)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(0)
    c = rng.random(200) < 0.5
    s = (~c) + rng.normal(0, 1, 200)
    est = bootstrap(auroc, s, c, resamples=200)
    assert est.low <= est.value <= est.high
    assert 0.6 < est.value < 0.95
