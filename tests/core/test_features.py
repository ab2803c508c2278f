"""The named features of the one pass against separately computed values."""

from __future__ import annotations

import pytest
import torch

from semgrad_guard import SemGradScorer, UncertaintyScore
from semgrad_guard.scoring.statistics import SCALAR_FEATURES

from .reference import ROUNDING, largest_relative_change, naive_features
from .test_scores import pairs
from .tiny import tiny_llama, tiny_local_model

# After the question the tiny chat template writes "<|im_end|> <|im_start|> assistant".
TAIL = (-1, -2, -3)


def feature_names(offsets: tuple[int, ...], layers: tuple[int, ...]) -> set[str]:
    return set(SCALAR_FEATURES) | {f"grad_{norm}/{k}/{layer}" for norm in ("l1", "l2")
                                   for k in offsets for layer in layers}


def test_eligible_offsets_are_the_templates_fixed_tail() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    assert scorer.anchor.offset == -2 and scorer.feature_offsets == TAIL
    score = scorer.score_batch([pairs(lm)[0]])[0]
    assert set(score.features) == feature_names(TAIL, (2, 3))
    explicit = SemGradScorer(lm, anchor_offset=-7, feature_offsets=[-1, -2])
    assert explicit.feature_offsets == (-1, -2, -7)
    assert SemGradScorer(lm, feature_offsets=()).feature_offsets == (-2,)


@pytest.mark.parametrize(("anchor", "layers"), [(-2, (2, 3)), (-1, (1,)), (-5, (0, 2))])
def test_every_feature_equals_a_separate_computation(anchor: int, layers: tuple[int, ...]
                                                     ) -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, anchor_offset=anchor, layers=layers)
    reference = tiny_llama()
    for prompt, response in pairs(lm):
        got = scorer.score_batch([(prompt, response)])[0].features
        want = naive_features(reference, prompt, response, anchor, scorer.feature_offsets,
                              layers)
        assert set(got) == set(want)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-9), name


def test_offsets_before_the_anchor_leave_its_scores_to_rounding() -> None:
    """Without other offsets the pass starts at the anchor, as it did before features.
    With them it starts at the earliest offset; the configured anchor's scores stay what
    they were to float32 rounding (and an anchor one column off is far outside it)."""
    lm = tiny_local_model()
    rows = pairs(lm)
    narrow = SemGradScorer(lm, feature_offsets=(), anchor_offset=-1, method="hybridgrad")
    wide = SemGradScorer(lm, anchor_offset=-1, method="hybridgrad", hidden_states=True)
    off_by_one = SemGradScorer(lm, feature_offsets=(), anchor_offset=-2, method="hybridgrad")
    assert narrow.feature_offsets == (-1,) and wide.feature_offsets == TAIL
    generations = lm.generate_batch(["what is the color of the sky ?", "who wrote the moon ?"],
                                    max_new_tokens=5)
    without = narrow.score_batch(rows) + narrow.score_batch(generations, release=False)
    wrong = off_by_one.score_batch(rows) + off_by_one.score_batch(generations, release=False)
    with_features = wide.score_batch(rows) + wide.score_batch(generations)
    for before, after, elsewhere in zip(without, with_features, wrong, strict=True):
        assert after.scores.keys() == before.scores.keys()
        assert largest_relative_change(before.scores, after.scores) < ROUNDING
        assert largest_relative_change(before.components, after.components) < ROUNDING
        assert largest_relative_change(before.features, after.features) < ROUNDING
        assert largest_relative_change(before.scores, elsewhere.scores) > 1000 * ROUNDING


def test_batch_equals_single_and_cache_reuse_equals_fresh() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, hidden_states=True)
    rows = pairs(lm)
    batch = scorer.score_batch(rows)
    generations = lm.generate_batch(["what is the color of the sky ?", "who wrote the moon ?"],
                                    max_new_tokens=5)
    fresh = [scorer.score_batch([(g.prompt_ids, g.response_ids)])[0] for g in generations]
    reused = scorer.score_batch(generations)
    alone_rows = [scorer.score_batch([row])[0] for row in rows]
    for together, alone in [*zip(batch, alone_rows, strict=True),
                            *zip(reused, fresh, strict=True)]:
        assert set(together.features) == set(alone.features)
        for name, value in alone.features.items():
            assert together.features[name] == pytest.approx(value, rel=1e-4, abs=1e-9), name
        assert together.hidden_states is not None and alone.hidden_states is not None
        torch.testing.assert_close(together.hidden_states.anchor, alone.hidden_states.anchor)
        torch.testing.assert_close(together.hidden_states.last, alone.hidden_states.last)


def test_hidden_states_equal_a_plain_forward() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, hidden_states=True)
    model = tiny_llama()
    for prompt, response in pairs(lm):
        probe = scorer.score_batch([(prompt, response)])[0].hidden_states
        assert probe is not None
        with torch.no_grad():
            states = model(input_ids=torch.tensor([prompt + response]),
                           output_hidden_states=True).hidden_states
        n, t = len(prompt), len(response)
        assert probe.anchor.shape == probe.last.shape == (len(states), 32)
        torch.testing.assert_close(probe.anchor, torch.stack([h[0, n - 2] for h in states]))
        torch.testing.assert_close(probe.last, torch.stack([h[0, n + t - 2] for h in states]))


def test_hidden_states_only_when_asked_and_left_out_of_to_dict() -> None:
    lm = tiny_local_model()
    prompt, response = pairs(lm)[0]
    assert SemGradScorer(lm).score_batch([(prompt, response)])[0].hidden_states is None
    score = SemGradScorer(lm, hidden_states=True).score_batch([(prompt, response)])[0]
    d = score.to_dict()
    assert "hidden_states" not in d and d["features"] == score.features
    assert UncertaintyScore(**{**d, "layers": tuple(d["layers"]),
                               "prompt_ids": tuple(d["prompt_ids"]),
                               "response_ids": tuple(d["response_ids"])}) == score
    full = score.to_dict(hidden_states=True)
    assert len(full["hidden_states"]["anchor"]) == 5 and len(full["hidden_states"]["last"][0]) == 32


def test_an_offset_before_a_short_prompt_is_left_out() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, anchor_offset=-1, layers=(2,), feature_offsets=[-1, -2, -3, -4])
    short, longer = [1, 5, 2], lm.prompt_ids("what is the color of the sky ?")
    scores = scorer.score_batch([(short, [44, 2]), (longer, [44, 2])])
    assert "grad_l1/-3/2" in scores[0].features and "grad_l1/-4/2" not in scores[0].features
    assert "grad_l1/-4/2" in scores[1].features
    alone = scorer.score_batch([(short, [44, 2])])[0]
    assert alone.features == pytest.approx(scores[0].features, rel=1e-4)
