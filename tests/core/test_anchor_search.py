"""The SPS anchor search: planted anchors are found, question tokens are never chosen."""

from __future__ import annotations

import pytest
import torch

from semgrad_guard import CalibrationError, ModelProfile, ProfileStore, SemGradScorer
from semgrad_guard.calibration.anchor_search import (
    choose_offset,
    search_anchor,
    sps_table,
    template_tail_length,
)

from .tiny import tiny_local_model


def planted_states(planted_offset: int, eligible: int = 6) -> tuple[torch.Tensor, list[int]]:
    """Ten questions x four wordings; only one offset's states cluster by question."""
    gen = torch.Generator().manual_seed(0)
    groups = [q for q in range(10) for _ in range(4)]
    states = torch.randn(len(groups), 8, 5, 16, generator=gen)
    centres = torch.randn(10, 16, generator=gen) * 3
    k = -planted_offset - 1
    for i, q in enumerate(groups):
        states[i, k, 2:] = centres[q] + 0.3 * torch.randn(3, 16, generator=gen)
    return states, groups


@pytest.mark.parametrize("planted", [-1, -3, -5])
def test_recovers_a_planted_anchor(planted: int) -> None:
    states, groups = planted_states(planted)
    table = sps_table(states, groups, eligible=6)
    assert choose_offset(table, layers=(3, 4, 5)) == planted
    assert table.values[-planted - 1, 2:].min() > 3  # clustered: far apart
    assert abs(table.values[0 if planted != -1 else 1, 3]) < 1  # noise: near zero


def test_never_picks_an_offset_inside_the_question() -> None:
    states, groups = planted_states(-7)
    table = sps_table(states, groups, eligible=6)
    assert -7 not in table.eligible
    assert choose_offset(table, layers=(3, 4, 5)) != -7


def test_search_on_a_model_and_profile_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_local_model()
    groups = [["what is the color of the sky ?", "the sky is what color ?", "color of sky ?"],
              ["who wrote the moon ?", "the moon was wrote by who ?"],
              ["where is the river ?", "the river is where ?", "where river ?"]]
    profile, table = search_anchor(lm, groups, window=6, progress=False)
    tail = template_tail_length(lm, [lm.prompt_ids(g[0]) for g in groups])
    assert profile.anchor_offset in table.eligible and -profile.anchor_offset <= tail
    assert profile.layers == lm.layout.upper_half()
    store = ProfileStore(tmp_path)
    path = store.save(profile)
    loaded = ModelProfile.load(path)
    assert loaded == profile
    scorer = SemGradScorer(lm, profile_store=store)
    assert scorer.anchor.source == "profile" and scorer.anchor.offset == profile.anchor_offset
    score = scorer.score_batch([(lm.prompt_ids("what is the sky ?"), [44, 2])])[0]
    assert score.anchor_source == "profile" and score.profile_id == profile.profile_id


def test_needs_paraphrases() -> None:
    with pytest.raises(CalibrationError, match="at least two questions"):
        search_anchor(tiny_local_model(), [["only one wording"]], progress=False)


def test_bad_profile_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.json"
    path.write_text('{"anchor_offset": -1, "layers": [1], "colour": 3}')
    with pytest.raises(Exception, match="unknown profile keys \\['colour'\\]"):
        ModelProfile.load(path)
