"""SemGradScorer's entry points: generate and score, or score what you already have
(generations and id pairs alike); the old names still work for one release."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from semgrad_guard import (
    NonFiniteScoreError,
    ScoringError,
    SemGradScorer,
    UncertaintyScore,
)
from semgrad_guard.model.generation import Generation
from semgrad_guard.scoring import Scorer

from .tiny import rule_out_while_scoring, tiny_local_model

PROMPTS = ["what is the color of the sky ?", "who wrote the moon ?"]
# Greedy answers of the tiny model: the first has tokens the others do not.
BATCH = ["what is the color of the sky ?", "how many cat and dog in the city of paris ?",
         "where is the river ?"]


def assert_scored_alone(scorer: SemGradScorer, generation: Generation,
                        score: UncertaintyScore) -> None:
    """``score`` is what the generation's ids get scored alone: every score and feature
    within 1e-4 relative."""
    alone = scorer.score_batch([(generation.prompt_ids, generation.response_ids)])[0]
    assert score.prompt_ids == alone.prompt_ids
    assert score.response_ids == alone.response_ids == generation.response_ids
    for field in ("scores", "features"):
        got, want = getattr(score, field), getattr(alone, field)
        assert set(got) == set(want), field
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-12), (field, name)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``passes(scorer)``: the list the rows of each of its scoring passes go to."""
    def spy(scorer: SemGradScorer) -> list[int]:
        seen: list[int] = []
        run = scorer._score_chunk

        def counted(rows: list[Any], *args: Any) -> Any:
            seen.append(len(rows))
            return run(rows, *args)

        monkeypatch.setattr(scorer, "_score_chunk", counted)
        return seen

    yield spy


def test_score_batch_takes_generations_and_id_pairs_together() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    generations = lm.generate_batch(PROMPTS, max_new_tokens=4)
    pair = (lm.prompt_ids(PROMPTS[1]), [44, 2])
    mixed = scorer.score_batch([generations[0], pair, generations[1]])
    assert [s.response_ids for s in mixed] == [generations[0].response_ids, (44, 2),
                                                generations[1].response_ids]
    alone = scorer.score_batch([pair])[0]
    assert mixed[1].scores["semgrad"] == pytest.approx(alone.scores["semgrad"], rel=1e-4)
    # The generations' caches were released after scoring.
    assert all(g.prefix_cache is None or g.prefix_cache.prompt_columns(
        len(g.prompt_ids), -1) is None for g in generations)


def test_generate_and_score_and_the_scorer_protocol() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    assert isinstance(scorer, Scorer)
    generation, score = scorer.generate_and_score(PROMPTS[0], max_new_tokens=4)
    assert score.response_ids == generation.response_ids and not score.retokenized
    text = scorer.score_text(PROMPTS[0], "blue")
    assert text.retokenized and text.response_ids == tuple(lm.response_ids("blue"))


def test_the_old_entry_points_warn_and_agree() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    pair = (lm.prompt_ids(PROMPTS[0]), [44, 73, 2])
    want = scorer.score_batch([pair])[0]
    with pytest.warns(DeprecationWarning, match=r"SemGradScorer\.score\(prompt_ids"):
        got = scorer.score(*pair)
    assert got.scores == want.scores
    generations = lm.generate_batch(PROMPTS, max_new_tokens=4)
    expected = [s.scores for s in scorer.score_batch(generations, release=False)]
    with pytest.warns(DeprecationWarning, match=r"score_generations\(\) is deprecated"):
        old = scorer.score_generations(generations)
    assert [s.scores for s in old] == expected


def test_generate_and_score_gives_one_answer_without_its_cache() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    # Several return sequences: the caller gets its prompt's first, scored.
    generation, score = scorer.generate_and_score(PROMPTS[0], max_new_tokens=4, do_sample=True,
                                                  num_return_sequences=2)
    assert score.response_ids == generation.response_ids
    # A generation kept for later no longer holds its prompt's keys and values.
    generation, _ = scorer.generate_and_score(PROMPTS[0], max_new_tokens=4)
    assert generation.prefix_cache is None or generation.prefix_cache.prompt_columns(
        len(generation.prompt_ids), -1) is None


def test_generate_and_score_batch_scores_the_batch_in_one_pass(passes: Any) -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    rows = passes(scorer)
    results = scorer.generate_and_score_batch(BATCH, max_new_tokens=4)
    assert rows == [len(BATCH)]  # one pass held every answer
    plain = lm.generate_batch(BATCH, max_new_tokens=4)
    assert [g.response_ids for g, _ in results] == [g.response_ids for g in plain]
    for generation, score in results:
        assert isinstance(score, UncertaintyScore)
        assert score.timings["batch_size"] == len(BATCH)
        assert_scored_alone(scorer, generation, score)
        # The pass reused generation's prompt cache, then released it.
        assert generation.prefix_cache is not None
        assert generation.prefix_cache.prompt_columns(len(generation.prompt_ids), -1) is None


def test_an_answer_of_the_batch_that_cannot_be_scored_fails_alone(passes: Any) -> None:
    lm = tiny_local_model()
    answers = [g.response_ids for g in lm.generate_batch(BATCH, max_new_tokens=4)]
    token = next(t for t in answers[0] if all(t not in a for a in answers[1:]))
    scorer = SemGradScorer(lm)
    rows = passes(scorer)
    handle = rule_out_while_scoring(lm, token)
    try:
        results = scorer.generate_and_score_batch(BATCH, max_new_tokens=4)
        # The batch was tried in one pass; that failed, so each answer ran alone.
        assert rows == [len(BATCH)] + [1] * len(BATCH)
        assert [g.response_ids for g, _ in results] == answers
        assert isinstance(results[0][1], NonFiniteScoreError)
        assert "non-finite" in str(results[0][1])
        for generation, score in results[1:]:
            assert isinstance(score, UncertaintyScore)
            assert_scored_alone(scorer, generation, score)
    finally:
        handle.remove()
    assert all(g.prefix_cache is not None and g.prefix_cache.prompt_columns(
        len(g.prompt_ids), -1) is None for g, _ in results)


def test_generate_and_score_batch_scores_every_return_sequence() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    torch.manual_seed(0)
    results = scorer.generate_and_score_batch(BATCH[:2], max_new_tokens=4, do_sample=True,
                                              num_return_sequences=2)
    assert [g.prompt_ids for g, _ in results] == [
        tuple(lm.prompt_ids(p)) for p in BATCH[:2] for _ in range(2)]
    assert any(isinstance(score, UncertaintyScore) for _, score in results)
    for generation, score in results:
        if isinstance(score, ScoringError):  # a sampled answer may hold no text
            with pytest.raises(type(score)):
                scorer.score_batch([(generation.prompt_ids, generation.response_ids)])
        else:
            assert_scored_alone(scorer, generation, score)
