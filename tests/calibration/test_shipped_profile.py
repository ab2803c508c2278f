"""The default model's shipped profile carries its learned score, and the figures and
thresholds the README and the example policy give are the ones it measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semgrad_guard.policy import load_policy
from semgrad_guard.scoring.profile import BUILTIN_PROFILES, PROFILE_VERSION, ModelProfile

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOMAINS = {"SciQ": "sciq", "TruthfulQA": "truthfulqa", "RAG, SciQ contexts": "rag-sciq",
           "RAG, TruthfulQA contexts": "rag-truthfulqa"}


@pytest.fixture(scope="module")
def shipped() -> ModelProfile:
    (path,) = BUILTIN_PROFILES.glob("*.json")
    return ModelProfile.load(path)


def test_the_shipped_profile_has_a_learned_score(shipped: ModelProfile) -> None:
    learned = shipped.learned
    assert shipped.version == PROFILE_VERSION and learned is not None
    assert (learned.n, learned.n_wrong) == (900, 594)
    assert learned.domains == tuple(sorted(DOMAINS.values()))
    assert learned.primary == "model" and len(learned.features) == 18
    assert shipped.semgrad_selection["sps"]["offset"] == shipped.anchor_offset


def test_the_readme_table_is_what_the_profile_measured(shipped: ModelProfile) -> None:
    assert shipped.learned is not None
    cv = shipped.learned.cv_auroc
    for label, domain in DOMAINS.items():
        row = re.search(rf"^\| {re.escape(label)} \| ([0-9.]+) \| ([0-9.]+) \|$", README, re.M)
        assert row is not None, label
        assert float(row.group(1)) == round(cv["learned"][domain], 3)
        assert float(row.group(2)) == round(cv["fallback"][domain], 3)


def test_the_documented_thresholds_agree_with_the_profile(shipped: ModelProfile) -> None:
    def pct(t: str) -> tuple[int, int]:
        share, wrong = shipped.data["labelled"]["pass_rates"][t]
        return round(share * 100), round(wrong * 100)

    rule = load_policy(ROOT / "examples" / "policy.yaml").default
    assert rule.score == "auto" and rule.threshold.max_error_probability == 0.6
    example = (ROOT / "examples" / "policy.yaml").read_text()
    assert "max_error_probability 0.6 passes {}% of them, with {}% wrong".format(*pct("0.6")) \
        in example
    assert "(0.7: {}%, {}% wrong)".format(*pct("0.7")) in example
    assert "0.5 passes {}% of the calibration answers".format(pct("0.5")[0]) in example
    text = " ".join(README.split())
    assert "`max_error_probability: 0.6` passes {}% of them with {}% wrong".format(
        *pct("0.6")) in text
    assert "0.7 passes {}% with {}% wrong".format(*pct("0.7")) in text
    assert "0.5 passes {}%".format(pct("0.5")[0]) in text
    assert "threshold: {max_error_probability: 0.6}" in README


@pytest.mark.real_model
def test_a_scorer_without_the_learned_scores_offsets_leaves_it_out(default_lm) -> None:
    from semgrad_guard import SemGradScorer
    from semgrad_guard.errors import ConfigError

    full = SemGradScorer(default_lm, hybrid=False)
    anchor_only = SemGradScorer(default_lm, hybrid=False, feature_offsets=())
    assert full.learned is not None and anchor_only.learned is None
    score = anchor_only.score_text("What is the capital of France?", "Paris")
    assert "learned" not in score.scores and score.value > 0
    with pytest.raises(ConfigError, match="feature_offsets differ"):
        SemGradScorer(default_lm, method="learned", feature_offsets=())
