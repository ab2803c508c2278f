"""The real offline default model: loads, answers, scores, calibrates."""

from __future__ import annotations

import json

import pytest

from semgrad_guard import (
    LocalModel,
    ModelProfile,
    ProfileStore,
    ResponseTooLongError,
    SemGradScorer,
    TokenizerMismatchError,
    qa_prompt,
)
from semgrad_guard.calibration import search_anchor
from semgrad_guard.cli import main
from semgrad_guard.model.vocabulary import tokenizer_fingerprint

from .passes import linear_forwards
from .reference import ROUNDING, largest_relative_change

pytestmark = pytest.mark.real_model


def test_generates_a_sensible_answer_and_scores_it(default_lm: LocalModel) -> None:
    generation = default_lm.generate(qa_prompt("What is the capital of France?"),
                                     max_new_tokens=16)
    assert "paris" in generation.text.lower()
    assert generation.stop_reason == "eos"
    assert generation.response_ids[-1] == default_lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    score = SemGradScorer(default_lm, profile=None).score_generation(generation)
    assert score.anchor_source == "default"
    assert score.anchor_offset == -4 and score.anchor_token == "<|im_start|>"
    assert score.layers == tuple(range(15, 30))
    assert 0 < score.scores["semgrad"] < 1 and score.scores["nll"] > 0
    assert not score.retokenized


def test_plain_prompt_gets_an_answer_to_an_easy_question(default_lm: LocalModel) -> None:
    # The instruct model driven as a base model: no chat template, the plain prompt.
    plain = LocalModel(default_lm.model, default_lm.tokenizer, prompt_format="plain",
                       name=default_lm.name)
    generation = plain.generate(qa_prompt("What is the capital of France?"), max_new_tokens=16)
    assert generation.prompt_text.endswith("Question: What is the capital of France?\nAnswer:")
    assert not generation.no_answer and "paris" in generation.text.lower()
    score = SemGradScorer(plain, profile=None).score_generation(generation)
    assert score.anchor_token == ":" and score.scores["semgrad"] > 0


def test_retokenised_text_is_flagged_and_close_to_exact(default_lm: LocalModel) -> None:
    scorer = SemGradScorer(default_lm, profile=None)
    generation = default_lm.generate(qa_prompt("What is the chemical symbol of gold?"),
                                     max_new_tokens=16)
    exact = scorer.score_generation(generation)
    text = scorer.score_text(qa_prompt("What is the chemical symbol of gold?"), generation.text)
    assert text.retokenized and not exact.retokenized
    if text.response_ids == exact.response_ids:
        assert text.value == pytest.approx(exact.value, rel=1e-3)


def test_score_command_prints_everything_needed_to_recompute(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["score", "--question", "What is the capital of France?", "--json",
                 "--profile", "none", "--max-new-tokens", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "paris" in out["answer"].lower()
    assert set(out["scores"]) == {"semgrad", "hybridgrad", "nll", "nll_per_token",
                                  "mean_entropy", "max_prob"}
    assert {"pg", "alpha", "mean_entropy"} <= set(out["components"])
    assert out["anchor_offset"] < 0 and out["layers"][0] >= 0
    assert out["prompt_ids"] and out["response_ids"] and out["timings"]["total"] > 0


def test_calibrated_profile_round_trips(default_lm: LocalModel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    groups = [["What is the capital of France?", "Which city is France's capital?",
               "France's capital city is what?"],
              ["Who wrote Hamlet?", "Hamlet was written by whom?", "Who is the author of Hamlet?"],
              ["What gas do plants absorb?", "Which gas is taken in by plants?",
               "Plants absorb which gas?"]]
    profile, table = search_anchor(default_lm, groups, progress=False)
    assert -profile.anchor_offset <= profile.fixed_suffix_length == 6
    assert profile.tokenizer_fingerprint == tokenizer_fingerprint(default_lm.tokenizer)
    store = ProfileStore(tmp_path)
    assert ModelProfile.load(store.save(profile)) == profile
    scorer = SemGradScorer(default_lm, profile_store=store)
    assert scorer.anchor.source == "profile"
    score = scorer.score_text(qa_prompt("Who wrote Hamlet?"), "Shakespeare")
    assert score.profile_id == profile.profile_id
    assert score.anchor_offset == profile.anchor_offset


def test_default_model_uses_the_shipped_profile(default_lm: LocalModel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scorer = SemGradScorer(default_lm, profile_store=ProfileStore(tmp_path))
    assert scorer.anchor.source == "profile"
    assert scorer.anchor.offset == -1 and scorer.anchor.layers == tuple(range(15, 30))
    assert SemGradScorer(default_lm, profile_store=ProfileStore(tmp_path, builtin=False)
                         ).anchor.source == "default"


def test_a_bert_tokenizer_on_the_default_model_is_refused(default_lm: LocalModel) -> None:
    from transformers import AutoTokenizer

    from semgrad_guard.embeddings import default_embedding_path

    bert = AutoTokenizer.from_pretrained(default_embedding_path())  # all-MiniLM-L6-v2's
    assert len(bert) < default_lm.layout.vocab_rows  # every id fits the embedding
    wrong = LocalModel(default_lm.model, bert, name="SmolLM2 with a BERT tokenizer")
    with pytest.raises(TokenizerMismatchError, match=r"id 1 .* is '\[unused0\]', not a "
                                                     r"special token; id 2 .* '\[unused1\]'"):
        SemGradScorer(wrong)


def test_the_shipped_profile_records_the_default_tokenizer(default_lm: LocalModel,
                                                           tmp_path) -> None:  # type: ignore[no-untyped-def]
    scorer = SemGradScorer(default_lm, profile_store=ProfileStore(tmp_path))
    assert scorer.profile is not None
    assert scorer.profile.tokenizer_fingerprint == tokenizer_fingerprint(default_lm.tokenizer)
    assert scorer.feature_offsets == (-1, -2, -3, -4, -5, -6)


def test_answers_over_the_default_maximum_are_refused_before_any_pass(default_lm: LocalModel
                                                                      ) -> None:
    scorer = SemGradScorer(default_lm)
    prompt = default_lm.prompt_ids(qa_prompt("Tell me a long story."))
    with pytest.raises(ResponseTooLongError, match="response of 1025 tokens is longer than "
                                                   "max_response_tokens=1024"):
        scorer.score_batch([(prompt, [28] * 1025)])[0]


def test_features_leave_the_anchors_scores_where_they_were(default_lm: LocalModel) -> None:
    """The pass that takes every offset's gradient starts at the earliest offset; the
    configured anchor's scores stay what the pass started at the anchor gives, to float32
    rounding (measured up to 5.6e-6 relative; an anchor one column off is far outside)."""
    questions = ["What is the capital of France?", "Who wrote Hamlet?",
                 "What gas do plants absorb?", "Which planet is known as the red planet?"]
    generations = default_lm.generate_batch([qa_prompt(q) for q in questions],
                                            max_new_tokens=40)
    anchor_only = SemGradScorer(default_lm, feature_offsets=(), method="hybridgrad")
    with_features = SemGradScorer(default_lm, method="hybridgrad")
    off_by_one = SemGradScorer(default_lm, feature_offsets=(), method="hybridgrad",
                               anchor_offset=anchor_only.anchor.offset - 1)
    before = anchor_only.score_batch(generations, release=False)
    elsewhere = off_by_one.score_batch(generations, release=False)
    after = with_features.score_batch(generations)
    for b, a, w in zip(before, after, elsewhere, strict=True):
        # The anchor-only pass lacks the learned score's inputs, so only the full pass
        # adds it (and its components); everything both carry agrees to rounding.
        assert "learned" in a.scores and "learned" not in b.scores
        assert largest_relative_change(b.scores, a.scores) < ROUNDING
        assert largest_relative_change(b.components, a.components) < ROUNDING
        assert largest_relative_change(b.scores, w.scores) > 100 * ROUNDING
        assert len([name for name in a.features if name.startswith("grad_l1/")]) == 6 * 15


def test_a_generation_is_scored_from_what_generation_kept(default_lm: LocalModel) -> None:
    """Scoring a generation runs only the blocks above the lowest anchor layer, from the
    state generation kept there, and takes the outputs generation kept of their linear
    layers instead of computing them; every score and feature equals the pass over every
    block to float32 rounding (within 1.3e-5 relative on 16 SciQ answers:
    benchmarks/float32_floor.md)."""
    scorer = SemGradScorer(default_lm)  # has the model keep what its pass reuses
    questions = ["What is the capital of France?", "Who wrote Hamlet?",
                 "What gas do plants absorb?"]
    generations = default_lm.generate_batch([qa_prompt(q) for q in questions],
                                            max_new_tokens=40)
    assert len({len(g.response_ids) for g in generations}) > 1  # right-padded in the pass
    below: list[int] = []
    block = default_lm.layout.blocks[scorer.anchor.layers[0] - 1]
    handle = block.register_forward_hook(lambda *_: below.append(1))
    try:
        with linear_forwards() as computed:
            kept = scorer.score_batch(generations, release=False)
        assert below == [] and computed == []
        full = scorer.score_batch([(g.prompt_ids, g.response_ids) for g in generations])
        assert below != []
    finally:
        handle.remove()
    for a, b in zip(kept, full, strict=True):
        assert "learned" in a.scores
        for name in ("scores", "components", "features"):
            assert largest_relative_change(getattr(b, name), getattr(a, name)) < ROUNDING
