"""Scoring a generation from what generation kept: the hidden state at the lowest anchor
layer (only the blocks above it run) and the outputs of the linear layers above it (none
of them runs again); every score and feature equals the pass over every block."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from semgrad_guard import LocalModel
from semgrad_guard.model.kept_outputs import OutputKeeper
from semgrad_guard.scoring.semgrad import SemGradScorer
from semgrad_guard.scoring.upper import runs_upper_pass

from .passes import linear_forwards, passes_of_block
from .reference import ROUNDING, largest_relative_change
from .tiny import tiny_bpe_model, tiny_llama, tiny_tokenizer

PROMPTS = ["what is the color of the sky ?", "who wrote the sun", "what"]
SIZES = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96,
         "pad_token_id": 0, "eos_token_id": 2, "bos_token_id": 1}


def tiny(family: str) -> LocalModel:
    torch.manual_seed(0)
    if family == "llama":
        model = tiny_llama()
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**SIZES, head_dim=8))
    model.eval()
    return LocalModel(model, tiny_tokenizer(), name=f"tiny-{family}")


def assert_same_scores(a: object, b: object) -> None:
    for name in ("scores", "components", "features"):
        assert largest_relative_change(getattr(b, name), getattr(a, name)) < ROUNDING, name


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("hybrid", [True, False])
def test_a_batch_scored_from_the_kept_state_equals_the_pass_over_every_block(
        family: str, hybrid: bool) -> None:
    lm = tiny(family)
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3), hybrid=hybrid)
    torch.manual_seed(1)
    generations = lm.generate_batch(PROMPTS, max_new_tokens=8, do_sample=True,
                                    temperature=1.5)
    assert len({len(g.prompt_ids) for g in generations}) == 3  # left-padded in generation
    with passes_of_block(lm, 1) as below, linear_forwards() as computed:
        kept = scorer.score_batch(generations, release=False)
    assert below == []  # the blocks below the lowest anchor layer never ran
    assert computed == []  # nor any linear layer above it: generation's outputs were taken
    with passes_of_block(lm, 1) as below:
        full = scorer.score_batch([(g.prompt_ids, g.response_ids) for g in generations])
    assert below != []
    for a, b in zip(kept, full, strict=True):
        assert_same_scores(a, b)
        assert set(a.features) == set(b.features)


def test_answers_cut_at_a_stop_string_are_scored_from_their_kept_states() -> None:
    lm = tiny_bpe_model()
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))
    greedy = lm.generate(PROMPTS[0], max_new_tokens=8)
    stop = lm.tokenizer.decode(greedy.response_ids[1:3])
    generations = lm.generate_batch(PROMPTS, max_new_tokens=8, stop_strings=[stop],
                                    tokenizer=lm.tokenizer)
    assert generations[0].stop_reason == "stop_string"
    assert len(generations[0].response_ids) < len(greedy.response_ids)
    with passes_of_block(lm, 1) as below:
        kept = scorer.score_batch(generations, release=False)
    assert below == []
    full = scorer.score_batch([(g.prompt_ids, g.response_ids) for g in generations])
    for a, b in zip(kept, full, strict=True):
        assert_same_scores(a, b)


def test_concurrent_callers_are_scored_from_their_kept_states() -> None:
    lm = tiny("llama")
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))
    with passes_of_block(lm, 1) as below:
        pairs = scorer.generate_and_score_batch(PROMPTS, max_new_tokens=6)
    generated = len(below)
    assert generated > 0  # generation runs every block; the scoring passes add none
    for g, s in pairs:
        assert_same_scores(s, scorer.score_batch([(g.prompt_ids, g.response_ids)])[0])
    with passes_of_block(lm, 1) as below:
        lm.generate_batch(PROMPTS, max_new_tokens=6)
    assert len(below) == generated


def test_an_answer_that_generation_did_not_feed_runs_every_block() -> None:
    lm = tiny("llama")
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))
    g = lm.generate("what is the color of the sky ?", max_new_tokens=6)
    other = dataclasses.replace(g, response_ids=(g.response_ids[0] + 1, *g.response_ids[1:]))
    with passes_of_block(lm, 1) as below:
        s = scorer.score_batch([other], release=False)[0]
    assert below != []
    assert_same_scores(s, scorer.score_batch([(other.prompt_ids, other.response_ids)])[0])


def test_hidden_state_probes_run_every_block() -> None:
    lm = tiny("llama")
    SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))  # keeps layer 2
    probing = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3),
                            hidden_states=True)
    g = lm.generate("what is the color of the sky ?", max_new_tokens=6)
    with passes_of_block(lm, 1) as below:
        s = probing.score_generation(g)
    assert below != [] and s.hidden_states is not None


def test_families_the_loop_does_not_reproduce_run_every_block() -> None:
    assert runs_upper_pass(tiny_llama())
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=1,
                                       eos_token_id=2, pad_token_id=0))
    assert not runs_upper_pass(gpt2)
    sliding = Qwen2ForCausalLM(Qwen2Config(**SIZES, use_sliding_window=True, sliding_window=8,
                                           max_window_layers=2))
    assert not runs_upper_pass(sliding)
    lm = LocalModel(gpt2, tiny_tokenizer(), name="tiny-gpt2")
    SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(1,))
    g = lm.generate("what is the color of the sky ?", max_new_tokens=4)
    assert g.prefix_cache is None or g.prefix_cache.hidden_state(1, -1, g.response_ids) is None


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_the_linear_layers_outputs_generation_kept_give_the_scores_computing_them_gives(
        family: str) -> None:
    lm = tiny(family)
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))
    torch.manual_seed(2)
    generations = lm.generate_batch(PROMPTS, max_new_tokens=8, do_sample=True,
                                    temperature=1.5, min_new_tokens=8)
    # Answers of 3, 5 and 8 tokens (what generation fed, cut): the pass right-pads them.
    generations = [dataclasses.replace(g, response_ids=g.response_ids[:n])
                   for g, n in zip(generations, (3, 5, 8), strict=True)]
    with linear_forwards() as computed:
        given = scorer.score_batch(generations, release=False)
    assert computed == []
    scorer._given_outputs = False
    with linear_forwards() as computed:
        recomputed = scorer.score_batch(generations, release=False)
    # Two blocks' projections and the head, in each chunk of the batch.
    assert computed and len(computed) % (2 * 7 + 1) == 0
    for a, b in zip(given, recomputed, strict=True):
        assert_same_scores(a, b)


def test_a_generation_over_the_limit_keeps_no_outputs_and_is_scored_all_the_same() -> None:
    lm = tiny("llama")
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))
    lm.kept_outputs_limit = 10_000  # bytes: a few columns of the tiny model
    g = lm.generate(PROMPTS[0], max_new_tokens=8)
    assert len(g.response_ids) > 4
    assert g.prefix_cache is not None
    assert g.prefix_cache.layer_outputs(-2, g.response_ids) is None
    assert g.prefix_cache.hidden_state(2, -2, g.response_ids) is not None
    with passes_of_block(lm, 1) as below, linear_forwards() as computed:
        s = scorer.score_batch([g], release=False)[0]
    assert below == [] and len(computed) == 2 * 7 + 1
    assert_same_scores(s, scorer.score_batch([(g.prompt_ids, g.response_ids)])[0])


def test_the_prompts_pass_keeps_only_its_last_columns() -> None:
    layer = nn.Linear(8, 16)
    keeper = OutputKeeper({"0.up": layer}, prompt_columns=3, limit=1 << 20)
    handle = layer.register_forward_hook(keeper.hooks()[0][1])
    with torch.no_grad():
        prompt = layer(torch.randn(2, 10, 8))
        steps = [layer(torch.randn(2, 1, 8)) for _ in range(2)]
    handle.remove()
    kept = keeper.kept(width=10, passes=3)["0.up"]
    assert torch.equal(kept, torch.cat([prompt[:, -3:], *steps], dim=1))
    # A copy of the prompt's last columns, not a view holding its whole output.
    assert keeper.bytes == kept.numel() * kept.element_size()
    assert keeper.kept(width=11, passes=3) == {}  # not the passes this keeper saw


def test_a_generation_keeps_outputs_over_its_prompts_last_columns() -> None:
    lm = tiny("llama")
    SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3),
                  feature_offsets=(-2,))
    g = lm.generate(PROMPTS[0], max_new_tokens=4)
    assert g.prefix_cache is not None
    outputs = g.prefix_cache.layer_outputs(-2, g.response_ids)
    assert outputs is not None
    fed = len(g.response_ids) - 1
    assert set(outputs) == {f"{block}.{name}" for block in (2, 3) for name in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")} | {"head"}
    assert outputs["2.mlp.up_proj"].shape == (1, 2 + fed, 64)
    assert outputs["head"].shape == (1, 1 + fed, 128)


def test_a_given_forward_runs_only_in_its_own_call() -> None:
    lm = tiny("llama")
    layer = lm.layout.blocks[0].mlp.up_proj
    x = torch.randn(1, 3, 32)
    expected = layer(x)
    seen: dict[str, torch.Tensor] = {}
    inside, done = threading.Event(), threading.Event()

    def elsewhere() -> None:
        inside.wait(5)
        seen["thread"] = layer(x)
        done.set()

    worker = threading.Thread(target=elsewhere)
    worker.start()
    with lm.forward_hooks([], [(layer, lambda _x: torch.zeros(1, 3, 64))]):
        assert not layer(x).any()
        inside.set()
        assert done.wait(5)  # another thread, bypassing the lock, computes as ever
        with lm.forward_hooks([]):  # a call opened inside this one computes as ever
            seen["nested"] = layer(x)
    worker.join()
    assert torch.equal(seen["thread"], expected) and torch.equal(seen["nested"], expected)
    assert "forward" not in layer.__dict__ and torch.equal(layer(x), expected)


def test_beam_search_keeps_nothing_and_is_scored_from_ids() -> None:
    lm = tiny("llama")
    scorer = SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))
    generations = lm.generate_batch(PROMPTS[:2], max_new_tokens=6, num_beams=2)
    for g, s in zip(generations, scorer.score_batch(generations), strict=True):
        assert_same_scores(s, scorer.score_batch([(g.prompt_ids, g.response_ids)])[0])
    assert all(g.prefix_cache is None for g in generations)
