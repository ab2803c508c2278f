"""Fused generate-and-score against the two-pass path: the same answers, the same scores."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from semgrad_guard import (
    GradientAccessError,
    LocalModel,
    ResponseTooLongError,
    SemGradScorer,
    UncertaintyScore,
)
from semgrad_guard.model.generation import Generation
from semgrad_guard.scoring.fused import generate_and_score_fused

from .tiny import (
    shared_component_model,
    tiny_bpe_model,
    tiny_llama,
    tiny_local_model,
    tiny_tokenizer,
)

PROMPTS = ["what is the color of the sky ?", "who wrote the moon ?",
           "how many cat and dog in the city of paris ?"]


def assert_same(fused: UncertaintyScore, two_pass: UncertaintyScore, rel: float = 1e-4
                ) -> None:
    """Every score, component and feature within ``rel`` relative."""
    assert fused.prompt_ids == two_pass.prompt_ids
    assert fused.response_ids == two_pass.response_ids
    for field in ("scores", "components", "features"):
        got, want = getattr(fused, field), getattr(two_pass, field)
        assert set(got) == set(want), field
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=rel, abs=1e-12), (field, name)


def fused_and_two_pass(scorer: SemGradScorer, prompts: list[str], **kwargs: Any
                       ) -> list[tuple[Generation, UncertaintyScore]]:
    """Fused results, each checked against the teacher-forced score of the same ids."""
    results = generate_and_score_fused(scorer, prompts, **kwargs)
    scores = [s for _, s in results]
    assert all(isinstance(s, UncertaintyScore) for s in scores), scores
    two_pass = scorer.score_batch([(g.prompt_ids, g.response_ids) for g, _ in results])
    for (_, fused), want in zip(results, two_pass, strict=True):
        assert isinstance(fused, UncertaintyScore)
        assert_same(fused, want)
    return results  # type: ignore[return-value]


def end_on(lm: LocalModel, prompt: str, step: int) -> int:
    """Make the model end its turn wherever it would say the token greedy decoding gives
    ``prompt`` at ``step``: the output head's row of the end-of-turn token becomes that
    token's (greedy decoding breaks the tie toward the lower id, the end-of-turn one), so
    answers of a batch end at different lengths."""
    token = int(lm.generate(prompt, max_new_tokens=step + 1).response_ids[step])
    eos = int(lm.tokenizer.eos_token_id)
    assert eos < token
    with torch.no_grad():
        head = lm.layout.lm_head.weight
        head[eos] = head[token]
    return token


@pytest.mark.parametrize(("offset", "layers"), [(None, None), (-1, (1,)), (-2, (2, 3)),
                                                (-5, (0, 2)), (-3, (1, 3))])
def test_greedy_chat_one_prompt_equals_the_two_pass_path(offset: int | None,
                                                         layers: tuple[int, ...] | None
                                                         ) -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, anchor_offset=offset, layers=layers)
    generation, score = scorer.generate_and_score(PROMPTS[0], fused=True, max_new_tokens=7)
    plain = lm.generate(PROMPTS[0], max_new_tokens=7)
    assert generation.response_ids == plain.response_ids
    assert generation.stop_reason == plain.stop_reason and generation.text == plain.text
    assert generation.prefix_cache is None
    assert_same(score, scorer.score_generation(plain))  # two passes, reusing the cache
    assert_same(score, scorer.score_batch([(plain.prompt_ids, plain.response_ids)])[0])
    assert "decode_with_graph" in score.timings


def test_two_passes_are_the_default_and_fused_is_asked_for() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    generation, score = scorer.generate_and_score(PROMPTS[1], max_new_tokens=5)
    assert "decode_with_graph" not in score.timings
    [(_, batched)] = scorer.generate_and_score_batch(PROMPTS[1:2], max_new_tokens=5)
    assert isinstance(batched, UncertaintyScore) and "decode_with_graph" not in batched.timings
    fused_generation, fused = scorer.generate_and_score(PROMPTS[1], fused=True,
                                                        max_new_tokens=5)
    assert "decode_with_graph" in fused.timings
    assert fused_generation.response_ids == generation.response_ids
    assert_same(fused, score)


def test_the_graph_starts_at_the_lowest_anchor_layer_and_no_parameter_gets_a_gradient(
        ) -> None:
    lm = tiny_local_model(layers=6)
    scorer = SemGradScorer(lm, anchor_offset=-2, layers=(3, 5))
    seen: list[tuple[int, int, bool]] = []  # (block, columns, output requires grad)

    def watch(block: int):  # type: ignore[no-untyped-def]
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            seen.append((block, h.shape[1], h.requires_grad))
        return hook

    handles = [b.register_forward_hook(watch(i)) for i, b in enumerate(lm.layout.blocks)]
    try:
        _, score = scorer.generate_and_score(PROMPTS[2], fused=True, max_new_tokens=6)
    finally:
        for h in handles:
            h.remove()
    assert score.scores["semgrad"] > 0
    # Block i produces hidden state i + 1: blocks 0..1 sit below layer 3 and never
    # carry a graph; block 2 produces layer 3, cut from its past (a leaf).
    assert not any(grad for block, _, grad in seen if block <= 2)
    width = len(score.prompt_ids)
    # The columns before the earliest offset taken: one pass, no graph.
    prefix = width + scorer.feature_offsets[-1]
    assert scorer.feature_offsets[-1] < scorer.anchor.offset  # the features reach before it
    assert {(cols, grad) for block, cols, grad in seen if block >= 3 and cols == prefix} \
        == {(prefix, False)}
    assert all(grad for block, cols, grad in seen if block >= 3 and cols != prefix)
    assert all(p.grad is None for p in lm.model.parameters())


def test_sampled_decoding_is_seeded_and_scores_as_two_passes() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    settings = {"do_sample": True, "temperature": 1.5, "top_p": 0.9, "max_new_tokens": 8}
    torch.manual_seed(7)
    results = fused_and_two_pass(scorer, PROMPTS, **settings)
    torch.manual_seed(7)
    plain = lm.generate_batch(PROMPTS, **settings)
    assert [g.response_ids for g, _ in results] == [g.response_ids for g in plain]
    torch.manual_seed(8)
    other = generate_and_score_fused(scorer, PROMPTS, **settings)
    assert [g.response_ids for g, _ in other] != [g.response_ids for g, _ in results]


def test_stop_strings_end_the_answer_and_it_scores_as_two_passes() -> None:
    lm = tiny_bpe_model()
    scorer = SemGradScorer(lm)
    greedy = lm.generate(PROMPTS[0], max_new_tokens=8)
    stop = lm.tokenizer.decode(greedy.response_ids[1:3])
    [(generation, _)] = fused_and_two_pass(scorer, PROMPTS[:1], max_new_tokens=8,
                                           stop_strings=[stop], tokenizer=lm.tokenizer)
    assert generation.stop_reason == "stop_string"
    assert lm.tokenizer.decode(generation.response_ids).endswith(stop)
    assert len(generation.response_ids) < len(greedy.response_ids)


def test_plain_prompt_format_scores_as_two_passes() -> None:
    lm = tiny_bpe_model(chat=False)
    assert lm.prompt_format.kind == "plain"  # it stops on "\n" by default
    scorer = SemGradScorer(lm, method="hybridgrad")
    results = fused_and_two_pass(scorer, PROMPTS, max_new_tokens=6)
    plain = lm.generate_batch(PROMPTS, max_new_tokens=6)
    assert results[0][0].prompt_ids[-1] == plain[0].prompt_ids[-1]
    assert [g.response_ids for g, _ in results] == [g.response_ids for g in plain]
    assert [g.stop_reason for g, _ in results] == [g.stop_reason for g in plain]


def test_batched_left_padded_answers_of_different_lengths_score_as_alone() -> None:
    lm = tiny_local_model()
    end_on(lm, PROMPTS[0], step=2)
    scorer = SemGradScorer(lm, anchor_offset=-2, layers=(1, 3))
    results = fused_and_two_pass(scorer, PROMPTS, max_new_tokens=9)
    lengths = {len(g.prompt_ids) for g, _ in results}
    assert len(lengths) > 1  # the prompts were left-padded
    assert len({len(g.response_ids) for g, _ in results}) > 1
    assert results[0][0].stop_reason == "eos" and len(results[0][0].response_ids) == 3
    for prompt, (generation, together) in zip(PROMPTS, results, strict=True):
        alone = generate_and_score_fused(scorer, [prompt], max_new_tokens=9)[0]
        assert alone[0].response_ids == generation.response_ids
        assert isinstance(alone[1], UncertaintyScore)
        assert_same(together, alone[1])


def test_a_head_whose_rows_share_a_large_vector_scores_as_two_passes() -> None:
    lm = shared_component_model()
    scorer = SemGradScorer(lm, method="hybridgrad")
    results = generate_and_score_fused(scorer, PROMPTS, max_new_tokens=12)
    two_pass = scorer.score_batch([(g.prompt_ids, g.response_ids) for g, _ in results])
    assert min(s.scores["mean_entropy"] for s in two_pass) < 0.1
    for (_, fused), want in zip(results, two_pass, strict=True):
        assert isinstance(fused, UncertaintyScore)
        assert_same(fused, want, rel=5e-5)


class _SoftCappedHead(torch.nn.Module):
    """An output head that is not a linear layer: a linear map, then a soft cap."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return 30 * torch.tanh(self.linear(hidden) / 30)


def test_an_output_head_that_is_not_a_linear_layer_scores_as_two_passes() -> None:
    model = tiny_llama()
    model.lm_head = _SoftCappedHead(model.lm_head)  # type: ignore[assignment]
    lm = LocalModel(model, tiny_tokenizer(), name="tiny-llama-capped")
    assert not isinstance(lm.layout.lm_head, torch.nn.Linear)
    fused_and_two_pass(SemGradScorer(lm, method="hybridgrad"), PROMPTS, max_new_tokens=6)


def test_without_hybrid_no_head_gradient_is_formed() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, hybrid=False)
    results = fused_and_two_pass(scorer, PROMPTS[:2], max_new_tokens=5)
    assert all("hybridgrad" not in s.scores and "pg" not in s.components for _, s in results)


def test_an_answer_that_cannot_be_scored_keeps_its_generation() -> None:
    lm = tiny_local_model()
    end_on(lm, PROMPTS[0], step=2)
    scorer = SemGradScorer(lm, max_response_tokens=4)
    results = scorer.generate_and_score_batch(PROMPTS, fused=True, max_new_tokens=6)
    short = [i for i, (g, _) in enumerate(results) if len(g.response_ids) <= 4]
    long = [i for i, (g, _) in enumerate(results) if len(g.response_ids) > 4]
    assert short and long
    assert all(isinstance(results[i][1], ResponseTooLongError) for i in long)
    assert all(results[i][0].text for i in long)
    for i in short:
        generation, score = results[i]
        assert isinstance(score, UncertaintyScore)
        want = scorer.score_batch([(generation.prompt_ids, generation.response_ids)])[0]
        assert_same(score, want)
    with pytest.raises(ResponseTooLongError):
        scorer.generate_and_score(PROMPTS[long[0]], fused=True, max_new_tokens=6)


def test_inference_mode_is_refused_with_a_typed_error() -> None:
    scorer = SemGradScorer(tiny_local_model())
    with torch.inference_mode(), pytest.raises(GradientAccessError, match="inference_mode"):
        generate_and_score_fused(scorer, PROMPTS[:1], max_new_tokens=3)


def test_settings_the_fused_path_does_not_take_use_two_passes() -> None:
    lm = tiny_local_model()
    probing = SemGradScorer(lm, hidden_states=True)
    _, score = probing.generate_and_score(PROMPTS[0], fused=True, max_new_tokens=4)
    assert score.hidden_states is not None and "decode_with_graph" not in score.timings


@pytest.mark.real_model
def test_default_model_fused_equals_two_pass(default_lm: LocalModel) -> None:
    """With the model in float64 the fused and teacher-forced passes agree to 1e-6 (the
    norms are accumulated in float32): the method is exact. In float32 they differ by
    rounding alone (one column at a time against all at once), as little as the two-pass
    score differs from itself: on 16 SciQ answers (benchmarks/float32_floor.md) the
    two-pass score alone, in a padded batch and from generation's cache agree within
    1.3e-5 relative on every field, and the fused one is within 1.5e-5 of it (SemGrad
    3.9e-6). So both are checked at 1e-4 (a margin of 6.7)."""
    from semgrad_guard import qa_prompt

    prompts = [qa_prompt("What is the capital of France?"),
               [{"role": "system", "content": "Answer in a few words."},
                {"role": "user", "content": "What is the chemical symbol of gold?"}]]
    model = default_lm.model
    try:
        for dtype, rel in ((torch.float64, 1e-6), (torch.float32, 1e-4)):
            model.to(dtype)
            scorer = SemGradScorer(default_lm, method="hybridgrad")
            results = scorer.generate_and_score_batch(prompts, fused=True,
                                                      max_new_tokens=12)
            plain = default_lm.generate_batch(prompts, max_new_tokens=12)
            assert [g.response_ids for g, _ in results] == [g.response_ids for g in plain]
            two_pass = scorer.score_batch(plain)
            for (_, fused), want in zip(results, two_pass, strict=True):
                assert isinstance(fused, UncertaintyScore)
                assert_same(fused, want, rel)
            if dtype == torch.float32:  # the two-pass path against itself: a batch, alone
                for generation, together in zip(plain, two_pass, strict=True):
                    alone = scorer.score_batch([(generation.prompt_ids,
                                                 generation.response_ids)])[0]
                    assert_same(together, alone, 1e-4)
    finally:
        model.to(torch.float32)
