"""The learned probability of error: fitting on synthetic data with a planted signal,
refusing degenerate data, falling back out of domain, and round-tripping in a profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semgrad_guard.calibration.learned import default_features, fit_learned_score
from semgrad_guard.calibration.supervised import read_labelled_answers, select_semgrad
from semgrad_guard.errors import ConfigError, DegenerateDataError, ProfileVersionError
from semgrad_guard.scoring.learned import LearnedScore, feature_value
from semgrad_guard.scoring.profile import BUILTIN_PROFILES, PROFILE_VERSION, ModelProfile

LAYERS = (3, 4)
OFFSETS = (-1, -2)


def synthetic(n: int = 240, seed: int = 0, signal: float = 2.0
              ) -> tuple[list[dict[str, float]], list[bool], list[str]]:
    """Answers whose L2 gradient norm at offset -2 carries the planted signal (wrong
    answers have larger ones); every other feature is noise, NLL a weak hint."""
    rng = np.random.default_rng(seed)
    rows, wrong, domains = [], [], []
    for i in range(n):
        bad = bool(i % 3 == 0)
        domain = "a" if i % 2 else "b"
        tokens = float(rng.integers(2, 30))
        nll_pt = float(abs(rng.normal(1.2 if bad else 1.0, 0.4))) + 0.05
        row = {"nll": nll_pt * tokens, "nll_per_token": nll_pt,
               "mean_entropy": float(abs(rng.normal(2, 0.5))),
               "max_entropy": float(abs(rng.normal(4, 0.5))),
               "max_token_nll": float(abs(rng.normal(4, 1))) + 0.1,
               "max_prob": float(rng.uniform(0.1, 0.9)), "answer_tokens": tokens,
               "objective_mean": float(rng.lognormal(0, 1)),
               "objective_sum": float(rng.lognormal(2, 1)),
               "semgrad": float(rng.lognormal(-4, 1)), "semgrad_sum": float(rng.lognormal(-2, 1))}
        for k in OFFSETS:
            for layer in LAYERS:
                planted = signal if (k == -2 and bad) else 0.0
                row[f"grad_l2/{k}/{layer}"] = float(np.exp(rng.normal(planted, 0.7)))
                row[f"grad_l1/{k}/{layer}"] = float(np.exp(rng.normal(planted, 0.7) + 3))
        rows.append(row)
        wrong.append(bad)
        domains.append(domain)
    return rows, wrong, domains


def test_the_fit_recovers_a_planted_signal() -> None:
    rows, wrong, domains = synthetic()
    names = default_features(OFFSETS, default_offset=-2)
    fit = fit_learned_score(rows, wrong, domains, features=names, judge="synthetic")
    score = fit.score
    coef = dict(zip(score.features, score.coef, strict=True))
    # The planted feature carries the largest weight, and it points to "wrong".
    assert max(coef, key=lambda n: abs(coef[n])) in ("grad_l2_mean/-2", "grad_l1_mean/-2")
    assert coef["grad_l2_mean/-2"] > 0
    assert min(fit.cv_auroc["learned"].values()) > 0.85
    assert min(fit.cv_auroc["learned"].values()) > max(fit.cv_auroc["fallback"].values())
    assert score.primary == "model"
    assert score.domains == ("a", "b") and score.n == len(rows) and score.n_wrong == sum(wrong)
    # Held-out answers from the same process: wrong ones get higher probabilities.
    test_rows, test_wrong, _ = synthetic(seed=1)
    p = np.array([score.error_probability(r) for r in test_rows])
    assert p[np.array(test_wrong)].mean() > p[~np.array(test_wrong)].mean() + 0.3
    assert np.all((p > 0) & (p < 1))


def test_the_probability_is_calibrated_on_held_out_answers() -> None:
    rows, wrong, domains = synthetic(n=600)
    score = fit_learned_score(rows, wrong, domains,
                              features=default_features(OFFSETS, -2)).score
    test_rows, test_wrong, _ = synthetic(n=600, seed=2)
    p = np.array([score.error_probability(r) for r in test_rows])
    # The mean predicted probability matches the error rate (the classes are 1:2 here).
    assert abs(p.mean() - np.mean(test_wrong)) < 0.06


@pytest.mark.parametrize(("wrong", "domains", "message"), [
    ([True] * 50, ["a"] * 50, "only 0 of 50 labelled answers are correct"),
    ([False] * 45 + [True] * 5, ["a"] * 50, "only 5 of 50 labelled answers are wrong"),
    ([True, False] * 10, ["a"] * 20, "20 labelled answers; a learned score needs at least 30"),
    ([True, False] * 20 + [False] * 10, ["a"] * 40 + ["b"] * 10,
     "every answer of domain 'b' is correct"),
])
def test_degenerate_data_is_refused(wrong: list[bool], domains: list[str], message: str) -> None:
    rows = [{"nll_per_token": float(i)} for i in range(len(wrong))]
    with pytest.raises(DegenerateDataError, match=message):
        fit_learned_score(rows, wrong, domains, features=["nll_per_token"])


def test_a_missing_feature_is_named() -> None:
    rows, wrong, domains = synthetic(n=60)
    with pytest.raises(Exception, match="needs feature 'grad_l2_mean/-9'"):
        fit_learned_score(rows, wrong, domains, features=["nll", "grad_l2_mean/-9"])


def test_out_of_domain_answers_fall_back_and_say_so() -> None:
    rows, wrong, domains = synthetic()
    score = fit_learned_score(rows, wrong, domains,
                              features=default_features(OFFSETS, -2)).score
    inside = score.estimate(rows[0])
    assert not inside.out_of_domain and inside.source == "model"
    assert inside.probability == inside.model_probability
    far = {name: value * 1e4 for name, value in rows[0].items()}
    far["max_prob"] = 0.5
    outside = score.estimate(far)
    assert outside.out_of_domain and outside.source == "fallback"
    assert outside.distance > score.detector.threshold
    assert outside.probability == outside.fallback_probability
    # The fallback is per-token NLL, calibrated: it rises with it.
    assert score.fallback(2.0) > score.fallback(1.0)
    # Few calibration answers lie beyond the threshold (its quantile is 0.99).
    beyond = [score.estimate(r).out_of_domain for r in rows]
    assert np.mean(beyond) < 0.05


def test_an_answer_without_some_offsets_falls_back_and_says_which() -> None:
    """A prompt shorter than the offsets the model reads gives no gradient there: the
    fallback answers, flagged out of domain, naming what was missing."""
    rows, wrong, domains = synthetic()
    score = fit_learned_score(rows, wrong, domains,
                              features=default_features(OFFSETS, -2)).score
    short = {name: value for name, value in rows[0].items()
             if not name.startswith(f"grad_l2/{OFFSETS[-1]}/")}
    estimate = score.estimate(short)
    assert estimate.out_of_domain and estimate.source == "fallback"
    assert estimate.missing == (f"grad_l2_mean/{OFFSETS[-1]}",)
    assert estimate.probability == estimate.fallback_probability \
        == score.fallback(rows[0]["nll_per_token"])
    assert not score.estimate(rows[0]).missing


def test_derived_features() -> None:
    row = {"grad_l2/-1/3": 1.0, "grad_l2/-1/4": 3.0, "grad_l1/-4/3": 10.0}
    assert feature_value(row, "grad_l2_mean/-1") == 2.0
    assert feature_value(row, "grad_l1_mean/-4") == 10.0


def _profile_with(score: LearnedScore) -> ModelProfile:
    return ModelProfile(model_name="tiny", model_fingerprint="m" * 16,
                        template_fingerprint="t" * 16, anchor_offset=-1, layers=LAYERS,
                        learned=score, semgrad_selection={"best": {"offset": -2}})


def test_the_profile_round_trips_with_its_learned_score(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows, wrong, domains = synthetic()
    score = fit_learned_score(rows, wrong, domains, features=default_features(OFFSETS, -2),
                              judge="synthetic").score
    path = _profile_with(score).save(tmp_path / "p.json")
    loaded = ModelProfile.load(path)
    assert loaded.version == PROFILE_VERSION
    assert loaded.learned == score
    assert loaded.semgrad_selection == {"best": {"offset": -2}}
    assert [loaded.learned.estimate(r) for r in rows[:5]] == [score.estimate(r) for r in rows[:5]]
    assert LearnedScore.from_dict(json.loads(json.dumps(score.to_dict()))) == score


def test_a_profile_of_an_unknown_version_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(_profile_with(fit_learned_score(*synthetic(), features=["nll"]).score)
                      .to_json())
    data["version"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileVersionError, match="format version 99; this library reads"):
        ModelProfile.load(path)
    assert issubclass(ProfileVersionError, ConfigError)


def test_a_profile_without_a_version_still_loads() -> None:
    # Profiles written before the learned score had no version key: format 1.
    data = json.loads(next(BUILTIN_PROFILES.glob("*.json")).read_text())
    data.pop("version", None)
    data.pop("learned", None)
    data.pop("semgrad_selection", None)
    profile = ModelProfile.from_json(json.dumps(data))
    assert profile.version == 1 and profile.learned is None


def test_a_broken_learned_score_is_a_config_error() -> None:
    data = json.loads(_profile_with(fit_learned_score(*synthetic(), features=["nll"]).score)
                      .to_json())
    data["learned"]["coef"] = [1.0, 2.0]
    with pytest.raises(ConfigError, match="coef has 2 entries for 1 features"):
        ModelProfile.from_json(json.dumps(data))


def test_the_best_single_semgrad_configuration_finds_the_planted_offset() -> None:
    rows, wrong, domains = synthetic()
    selection = select_semgrad(rows, wrong, domains, sps_offset=-1, layers=LAYERS)
    assert selection["best"]["offset"] == -2
    assert selection["best"]["worst"] > 0.85
    assert selection["sps"]["offset"] == -1 and selection["sps"]["worst"] < 0.65
    assert set(selection["best"]["cv_auroc"]) == {"a", "b"}


def test_labelled_answers_files_are_read_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"settings": {"data": "x"}}) + "\n"
                    + json.dumps({"prompt_ids": [1, 2], "response_ids": [3], "correct": True,
                                  "features": {"nll": 1.0}}) + "\n"
                    + '{"prompt_ids": [1')  # half a line from an interrupted run
    rows = read_labelled_answers(path)
    assert len(rows) == 1 and rows[0].domain == "answers" and rows[0].features == {"nll": 1.0}
    path.write_text(json.dumps({"prompt_ids": [1], "correct": True}) + "\n")
    with pytest.raises(ConfigError, match="no field 'response_ids'"):
        read_labelled_answers(path)
