"""The learned-score report end to end on synthetic features with a planted signal:
features files round-trip, the fit finds the signal, and nothing from the evaluation
splits reaches a fitted model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semgrad_bench import learned_report
from semgrad_bench.feature_sets import (
    GRADIENT_LAYERS,
    OFFSETS,
    LabelledSet,
    load_set,
    save_set,
)
from semgrad_bench.pass_features import pack
from semgrad_guard.errors import ConfigError

NAMES = ["nll", "nll_per_token", "mean_entropy", "max_entropy", "max_token_nll", "max_prob",
         "answer_tokens", "semgrad", "semgrad_sum", "objective_mean", "objective_sum",
         *(f"grad_{n}/{k}/{layer}" for n in ("l1", "l2") for k in OFFSETS
           for layer in GRADIENT_LAYERS)]


#: Two C values and three folds keep the tests quick (each fit cross-validates every C,
#: nested) and still make the choice of C a real one.
FIT = {"grid": (0.01, 1.0), "folds": 3}


def synthetic(name: str, n: int, seed: int, populations: tuple[str, ...]) -> LabelledSet:
    """Per-token NLL carries the signal (wrong answers +1 sd); everything else is noise,
    positive where the features are."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) < 0.5
    X = np.exp(rng.normal(0, 0.5, (n, len(NAMES))))
    X[:, NAMES.index("nll_per_token")] = 1.0 + wrong + rng.normal(0, 1, n)
    X[:, NAMES.index("answer_tokens")] = rng.integers(2, 40, n)
    pops = np.array([populations[i % len(populations)] for i in range(n)])
    return LabelledSet(name, X, NAMES, ~wrong, np.arange(n, dtype=np.int64), pops,
                       {"p_true": rng.random(n)})


@pytest.fixture
def features(tmp_path):
    for i, d in enumerate(learned_report.SETS):
        pops = ("rag-sciq", "rag-truthfulqa") if d == "rag" else (d,)
        for j, split in enumerate(("calibration", "evaluation")):
            save_set(tmp_path, synthetic(f"{d}-{split}", 120, 10 * i + j, pops))
    return tmp_path


def test_features_file_round_trips(tmp_path):
    s = synthetic("sciq-calibration", 30, 0, ("sciq",))
    t = load_set(save_set(tmp_path, s).parent, "sciq-calibration")
    assert t.names == s.names and (t.features == s.features).all()
    assert (t.correct == s.correct).all() and list(t.population) == list(s.population)
    assert (t.stored["p_true"] == s.stored["p_true"]).all()
    with pytest.raises(ConfigError, match="no features file"):
        load_set(tmp_path, "truthfulqa-calibration")
    with pytest.raises(ConfigError, match="no feature 'nope'"):
        t.raw("nope")


def test_pack_reads_the_answers_file(tmp_path):
    rows = [{"index": i, "population": "rag-sciq", "correct": i % 2 == 0,
             "features": {"nll": float(i), "grad_l1/-1/15": 2.0 * i}} for i in range(4)]
    (tmp_path / "rag-calibration.answers.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    s = load_set(pack(tmp_path, "rag-calibration").parent, "rag-calibration")
    assert s.names == ["nll", "grad_l1/-1/15"] and len(s) == 4
    assert s.raw("grad_l1/-1/15").tolist() == [0.0, 2.0, 4.0, 6.0]


def test_report_finds_the_signal_and_ignores_evaluation_labels(features, tmp_path, monkeypatch):
    # Transfer from two training combinations (of five) keeps every transfer row's code
    # path and a third of the fits.
    training = dict(list(learned_report.TRANSFER_TRAINING.items())[::4])
    monkeypatch.setattr(learned_report, "TRANSFER_TRAINING", training)
    data = learned_report.load(features)
    report = learned_report.evaluate(data, resamples=20, output=tmp_path, progress=False,
                                     **FIT)
    truth = 0.760  # Phi(1 / sqrt 2): the planted per-token NLL signal
    for d in learned_report.SETS:
        rows = report["sets"][d]["rows"]
        assert rows["nll_per_token"]["auroc"] == pytest.approx(truth, abs=0.12)
        assert rows[learned_report.LEARNED]["auroc"] == pytest.approx(truth, abs=0.12)
        assert rows["P(True) (stored run)"]["auroc"] == pytest.approx(0.5, abs=0.15)
        assert report["sets"][d]["best_likelihood_only"] in learned_report.LIKELIHOOD_ROWS
    for name in ("reliability.png", "roc_sciq.png", "roc_truthfulqa.png", "roc_rag.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    learned_report.write(report, tmp_path, "semgrad-bench learned-score ...")
    assert json.loads((tmp_path / "report.json").read_text())["resamples"] == 20
    text = (tmp_path / "report.md").read_text()
    assert "## Headline" in text and "## Cross-dataset transfer" in text
    # Shuffling the evaluation labels moves no fitted number: the learned probabilities,
    # the chosen C and the chosen SemGrad configuration come from calibration data only.
    for d in learned_report.SETS:
        s = data.evaluation[d]
        s.correct = np.random.default_rng(7).permutation(s.correct)
    monkeypatch.setattr(learned_report, "TRANSFER_TRAINING", {})  # the same fit, skipped here
    again = learned_report.evaluate(data, resamples=10, progress=False, **FIT)
    assert again["shipped"]["C"] == report["shipped"]["C"]
    assert again["best_semgrad_configuration"]["config"] == \
        report["best_semgrad_configuration"]["config"]
    assert again["sets"]["sciq"]["mean_predicted_error"] == \
        report["sets"]["sciq"]["mean_predicted_error"]


def test_shipped_row_is_the_library_scores_probability(features):
    data = learned_report.load(features)
    model = learned_report.fit(list(data.calibration.values()), *learned_report.SHIPPED, **FIT)
    s = data.evaluation["truthfulqa"]
    expected = [model.fitted.score.error_probability(row) for row in s.rows()]
    assert model.probability(s).tolist() == pytest.approx(expected)
