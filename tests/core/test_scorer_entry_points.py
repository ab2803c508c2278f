"""SemGradScorer's entry points: generate and score, or score what you already have
(generations and id pairs alike); the old names still work for one release."""

from __future__ import annotations

import pytest

from semgrad_guard import SemGradScorer
from semgrad_guard.scoring import Scorer

from .tiny import tiny_local_model

PROMPTS = ["what is the color of the sky ?", "who wrote the moon ?"]


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
