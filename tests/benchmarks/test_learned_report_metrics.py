"""The learned-score report's statistics on data with known answers: AUROC within
populations, stratified and paired bootstrap, ECE and reliability bins, length thirds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from semgrad_bench.metrics import (
    bootstrap_auroc,
    expected_calibration_error,
    length_thirds,
    paired_difference,
    population_auroc,
    reliability_bins,
)


def _synthetic(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose wrong answers sit ``separation`` standard deviations higher: the AUROC
    is Phi(separation / sqrt(2))."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) < 0.5
    return wrong * separation + rng.normal(0, 1, n), ~wrong


def test_population_auroc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, 300).astype(float)  # many ties
    correct = rng.random(300) < 0.4
    assert population_auroc(s, correct) == pytest.approx(roc_auc_score(~correct, s))


def test_population_auroc_is_the_mean_within_populations():
    # Population A (more wrong answers, higher scores): the score ranks perfectly (1.0);
    # population B: exactly inverted (0.0). Pooled, A's higher scores and higher error
    # rate add a separation that neither population has: 12 of 20 pairs, 0.6.
    s = np.array([10, 11, 12, 13, 14, 3, 2, 1, 0], dtype=float)
    correct = np.array([True, True, False, False, False, True, True, False, False])
    pops = np.array(["a"] * 5 + ["b"] * 4)
    assert population_auroc(s[:5], correct[:5]) == 1.0
    assert population_auroc(s[5:], correct[5:]) == 0.0
    assert population_auroc(s, correct, pops) == pytest.approx(0.5)
    assert population_auroc(s, correct) == pytest.approx(0.6)


def test_bootstrap_interval_covers_the_known_auroc():
    # True AUROC for separation 1: Phi(1/sqrt(2)) = 0.760.
    s, correct = _synthetic(2000, 1.0, seed=2)
    est = bootstrap_auroc(s, correct, resamples=400)
    truth = 0.5 * (1 + math.erf(1.0 / 2))
    assert est.low <= truth <= est.high
    assert est.low <= est.value <= est.high
    assert est.high - est.low < 0.06  # about 4 standard errors of n=2000


def test_bootstrap_resamples_within_populations():
    # Every resample keeps the population sizes: a population with one wrong answer among
    # many right ones never vanishes from a resample, so no resample is skipped as NaN.
    s = np.arange(40, dtype=float)
    correct = np.ones(40, dtype=bool)
    correct[[0, 1, 20, 21]] = False
    pops = np.array(["a"] * 20 + ["b"] * 20)
    est = bootstrap_auroc(s, correct, pops, resamples=200, seed=3)
    assert not math.isnan(est.low) and not math.isnan(est.high)


def test_paired_difference_of_a_score_with_itself_is_exactly_zero():
    s, correct = _synthetic(300, 0.8, seed=4)
    d = paired_difference(s, s, correct, resamples=200)
    assert (d.value, d.low, d.high, d.share_not_above) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_finds_a_better_score_and_is_tighter_than_unpaired():
    rng = np.random.default_rng(5)
    wrong = rng.random(1000) < 0.5
    shared = rng.normal(0, 1, 1000)
    good = wrong * 1.0 + shared + rng.normal(0, 0.3, 1000)
    worse = wrong * 0.7 + shared + rng.normal(0, 0.3, 1000)
    d = paired_difference(good, worse, ~wrong, resamples=400)
    a = bootstrap_auroc(good, ~wrong, resamples=400)
    b = bootstrap_auroc(worse, ~wrong, resamples=400)
    assert d.value == pytest.approx(a.value - b.value)
    assert 0 < d.low < d.value < d.high
    assert d.share_not_above == 0.0
    # Pairing cancels the shared noise: narrower than the two marginal intervals combined.
    assert d.high - d.low < (a.high - a.low) + (b.high - b.low)
    # Swapping the scores flips the sign and the interval.
    r = paired_difference(worse, good, ~wrong, resamples=400)
    assert (r.value, r.low, r.high) == pytest.approx((-d.value, -d.high, -d.low))


def test_ece_of_calibrated_and_miscalibrated_predictions():
    # Ten answers predicted 0.3 (three wrong) and ten predicted 0.8 (eight wrong): ECE 0.
    p = np.array([0.3] * 10 + [0.8] * 10)
    wrong = np.array([1] * 3 + [0] * 7 + [1] * 8 + [0] * 2, dtype=bool)
    assert expected_calibration_error(p, ~wrong) == pytest.approx(0.0)
    # Predict 0.9 where 8 of 10 are wrong and 0.1 where 3 of 10 are: |0.1|/2 + |0.2|/2.
    p2 = np.array([0.1] * 10 + [0.9] * 10)
    assert expected_calibration_error(p2, ~wrong) == pytest.approx(0.15)
    # Large calibrated sample: ECE near zero.
    rng = np.random.default_rng(6)
    q = rng.random(20000)
    assert expected_calibration_error(q, ~(rng.random(20000) < q)) < 0.02


def test_ece_refuses_values_outside_zero_one():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0.2, 1.5], [True, False])


def test_reliability_bins_by_hand():
    p = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    correct = np.array([True, False, True, False, False])
    bins = reliability_bins(p, correct)
    assert [(b.low, b.high, b.answers) for b in bins] == [(0.0, 0.1, 1), (0.1, 0.2, 2),
                                                           (0.9, 1.0, 2)]
    assert bins[1].mean_predicted == pytest.approx(0.135)
    assert bins[1].observed_wrong == pytest.approx(0.5)
    assert bins[2].observed_wrong == 1.0


def test_length_thirds_split_by_length_and_see_past_length():
    # Wrong answers are longer, and within every length band the score separates
    # perfectly: AUROC 1 within each third whatever length alone would say.
    tokens = np.arange(1, 31)
    wrong = np.zeros(30, dtype=bool)
    wrong[[3, 4, 13, 14, 15, 26, 27, 28, 29]] = True
    score = wrong * 10.0 - tokens * 0.01
    bands = length_thirds(score, ~wrong, tokens)
    assert [(b.shortest, b.longest, b.answers) for b in bands] == [(1, 10, 10), (11, 20, 10),
                                                                   (21, 30, 10)]
    assert [b.wrong_share for b in bands] == pytest.approx([0.2, 0.3, 0.4])
    assert [b.auroc for b in bands] == [1.0, 1.0, 1.0]
    # Length alone, within a third, ranks by length only.
    assert length_thirds(tokens.astype(float), ~wrong, tokens)[2].auroc == pytest.approx(
        roc_auc_score(wrong[20:], tokens[20:]))


def test_length_thirds_keep_tied_lengths_in_answer_order():
    tokens = np.array([5] * 9)
    bands = length_thirds(np.arange(9.0), np.array([True, False] * 4 + [True]), tokens)
    assert [b.answers for b in bands] == [3, 3, 3]
    assert all(b.shortest == b.longest == 5 for b in bands)
