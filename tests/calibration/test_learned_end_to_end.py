"""The learned score on a real (tiny, random) model: answers scored by the one pass, a fit
on planted labels written into a profile, and a policy acting on its probability of error
through Guard.check."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from semgrad_guard import Guard, PolicyConfig, SemGradScorer, qa_prompt
from semgrad_guard.calibration.labelling import LabelledScore
from semgrad_guard.calibration.supervised import fit_profile, score_labelled
from semgrad_guard.errors import ConfigError
from semgrad_guard.scoring.learned import OutOfDomainDetector
from semgrad_guard.scoring.profile import ModelProfile, model_fingerprint
from tests.core.tiny import WORDS, tiny_local_model

QUESTION_WORDS = [w for w in WORDS if w.isalpha() and w.islower()]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    lm = tiny_local_model()
    plain = SemGradScorer(lm, profile=None, hybrid=False)
    base = ModelProfile(model_name=lm.name, model_fingerprint=model_fingerprint(lm.model),
                        template_fingerprint=lm.prompt_format.fingerprint(lm.tokenizer),
                        anchor_offset=-1, layers=plain.anchor.layers)
    rng = random.Random(0)
    questions = [" ".join(rng.choices(QUESTION_WORDS, k=5)) + " ?" for _ in range(80)]
    generations = lm.generate_batch([qa_prompt(q) for q in questions], max_new_tokens=6)
    rows = [LabelledScore(i, q, g.text, {}, True, g.stop_reason, domain="ab"[i % 2],
                          prompt_ids=list(g.prompt_ids), response_ids=list(g.response_ids))
            for i, (q, g) in enumerate(zip(questions, generations, strict=True))]
    scorer = SemGradScorer(lm, profile=base, hybrid=False)
    rows = score_labelled(rows, scorer)
    # The planted label: an answer is wrong when the model found it unlikely.
    cut = {d: sorted(r.features["nll_per_token"] for r in rows if r.domain == d)
           for d in "ab"}
    rows = [replace(r, correct=r.features["nll_per_token"] <= cut[r.domain][len(cut[r.domain]) // 2])
            for r in rows]
    profile, fit, _ = fit_profile(base, rows, default_offset=-3, judge="planted")
    path = profile.save(tmp_path_factory.mktemp("profile") / "tiny.json")
    return lm, path, fit, rows


def test_the_fit_on_the_pass_features_finds_the_planted_labels(fitted) -> None:  # type: ignore[no-untyped-def]
    _, path, fit, rows = fitted
    assert min(fit.cv_auroc["learned"].values()) > 0.8
    profile = ModelProfile.load(path)
    assert profile.learned is not None and profile.learned.n == len(rows)
    assert profile.learned.domains == ("a", "b") and profile.learned.judge == "planted"
    assert "grad_l2_mean/-1" in profile.learned.features
    assert profile.semgrad_selection["sps"]["offset"] == -1


def test_a_policy_acts_on_the_learned_probability_through_guard_check(fitted) -> None:  # type: ignore[no-untyped-def]
    lm, path, _, rows = fitted
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "score": "auto", "profile": str(path),
        "threshold": {"max_error_probability": 0.5}, "actions": ["abstain"]}})
    guard = Guard.from_policy(policy, model=lm)
    decisions = []
    for row in rows[:12]:
        generation = lm.generate(qa_prompt(row.question), max_new_tokens=6)
        decisions.append(guard.check(row.question, generation.text, generation=generation))
    for decision in decisions:
        assert decision.score is not None and decision.score.method == "learned"
        p = decision.score.scores["learned"]
        assert 0.0 < p < 1.0 and decision.error_probability == p
        assert decision.action == ("pass" if p <= 0.5 else "abstain")
    assert {d.action for d in decisions} == {"pass", "abstain"}


def test_out_of_domain_answers_fall_back_and_the_decision_says_so(fitted) -> None:  # type: ignore[no-untyped-def]
    lm, path, _, rows = fitted
    profile = ModelProfile.load(path)
    assert profile.learned is not None
    nowhere = replace(profile.learned, detector=OutOfDomainDetector(
        profile.learned.detector.precision, threshold=0.0, quantile=0.0))
    scorer = SemGradScorer(lm, profile=replace(profile, learned=nowhere), method="learned",
                           hybrid=False)
    score = scorer.score_batch([(rows[0].prompt_ids, rows[0].response_ids)])[0]
    assert score.out_of_domain
    assert score.value == score.components["learned_fallback"]
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "score": "learned", "threshold": {"max_error_probability": 1.0}}})
    decision = Guard(policy).check(rows[0].question, rows[0].answer, score=score)
    assert decision.action == "pass" and "out_of_domain" in decision.flags


def test_the_learned_score_needs_its_profile_and_anchor(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lm, path, _, rows = fitted
    with pytest.raises(ConfigError, match="needs a model profile fitted on labelled answers"):
        SemGradScorer(lm, profile=None, method="learned")
    # Another anchor than the profile's: no learned score (it was fitted on the profile's).
    with pytest.raises(ConfigError, match="used with its own anchor"):
        SemGradScorer(lm, profile=ModelProfile.load(path), anchor_offset=-2, method="auto")
    other = SemGradScorer(lm, profile=ModelProfile.load(path), anchor_offset=-2)
    assert "learned" not in other.score_batch([(rows[0].prompt_ids, rows[0].response_ids)])[0] \
        .scores
