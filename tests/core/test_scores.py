"""SemGrad against a naive reference, and the invariants a score must keep."""

from __future__ import annotations

import pytest
import torch

from semgrad_guard import LocalModel, SemGradScorer

from .reference import naive_scores
from .tiny import shared_component_model, tiny_llama, tiny_local_model, tiny_tokenizer

PROMPTS = ["what is the color of the sky ?", "who wrote the moon ?",
           "how many cat and dog in the city of paris ?", "where is the river ?"]
RESPONSES = [[44, 73, 68, 2], [30], [50, 51, 52, 53, 54, 55, 2], [61, 62]]


def pairs(lm: LocalModel) -> list[tuple[list[int], list[int]]]:
    return [(lm.prompt_ids(p), r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]


@pytest.mark.parametrize("offset", [-1, -2, -3])
@pytest.mark.parametrize("layers", [(2, 3), (1,), (0, 2)])
def test_matches_naive_reference(offset: int, layers: tuple[int, ...]) -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, anchor_offset=offset, layers=layers)
    for prompt, response in pairs(lm):
        got = scorer.score_batch([(prompt, response)])[0]
        want = naive_scores(tiny_llama(), prompt, response, offset, layers)
        for key in ("semgrad", "hybridgrad", "nll", "mean_entropy", "max_prob"):
            assert got.scores[key] == pytest.approx(want[key], rel=1e-4, abs=1e-9), key
        assert got.components["pg"] == pytest.approx(want["pg"], rel=1e-4)
        assert got.components["alpha"] == pytest.approx(want["alpha"], rel=1e-5)
        assert got.anchor_offset == offset and got.layers == tuple(sorted(layers))


def test_batch_equals_single() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    batch = scorer.score_batch(pairs(lm))
    for (prompt, response), together in zip(pairs(lm), batch, strict=True):
        alone = scorer.score_batch([(prompt, response)])[0]
        assert together.response_ids == tuple(response)
        for key, value in alone.scores.items():
            assert together.scores[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


def test_left_and_right_padding_agree() -> None:
    """The engine left-pads; a right-padded full forward must give the same scores."""
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, anchor_offset=-2, layers=(1, 2, 3))
    rows = pairs(lm)
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        mask[i, : len(p) + len(r)] = 1
    model = tiny_llama()
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    objective = torch.zeros(())
    for i, (p, r) in enumerate(rows):
        logp = torch.log_softmax(out.logits[i, len(p) - 1 : len(p) + len(r) - 1], -1)
        entropy = -(logp.exp() * logp).sum(-1).detach()
        objective = objective - (entropy * logp[torch.arange(len(r)), torch.tensor(r)]).mean()
    hidden = [out.hidden_states[layer] for layer in (1, 2, 3)]
    grads = torch.autograd.grad(objective, hidden)
    for i, (score, (p, _)) in enumerate(zip(scorer.score_batch(rows), rows, strict=True)):
        right = torch.stack([g[i, len(p) - 2].abs().mean() for g in grads]).mean()
        assert score.scores["semgrad"] == pytest.approx(float(right), rel=1e-4)


def test_frozen_equals_unfrozen_and_model_is_restored() -> None:
    lm = tiny_local_model()
    prompt, response = pairs(lm)[0]
    unfrozen = SemGradScorer(lm).score_batch([(prompt, response)])[0]
    for p in lm.model.parameters():
        p.requires_grad_(False)
    lm.model.train()
    torch.set_grad_enabled(False)
    try:
        frozen = SemGradScorer(lm).score_batch([(prompt, response)])[0]
        assert not torch.is_grad_enabled()
        assert lm.model.training
        assert not any(p.requires_grad for p in lm.model.parameters())
    finally:
        torch.set_grad_enabled(True)
    assert frozen.scores == pytest.approx(unfrozen.scores, rel=1e-5)
    lm.model.eval()
    for p in lm.model.parameters():
        p.requires_grad_(True)
    SemGradScorer(lm).score_batch([(prompt, response)])[0]
    assert all(p.requires_grad for p in lm.model.parameters())
    assert all(p.grad is None for p in lm.model.parameters())
    assert not lm.model.training


def test_tied_embeddings_use_the_lm_head_term_alone() -> None:
    lm = LocalModel(tiny_llama(tie=True), tiny_tokenizer(), name="tied")
    prompt, response = pairs(lm)[0]
    score = SemGradScorer(lm, anchor_offset=-1, layers=(3,)).score_batch([(prompt, response)])[0]
    # Closed form: dJ/dW_out = sum_t g_t h_t^T with g the logit gradient.
    ids = torch.tensor([prompt + response])
    model = lm.model
    captured = {}
    handle = model.lm_head.register_forward_hook(
        lambda m, i, o: captured.update(h=i[0], z=o))
    out = model(input_ids=ids)
    handle.remove()
    n, t = len(prompt), len(response)
    logp = torch.log_softmax(out.logits[0, n - 1 : n + t - 1], -1)
    entropy = -(logp.exp() * logp).sum(-1).detach()
    objective = -(entropy * logp[torch.arange(t), torch.tensor(response)]).mean()
    (g,) = torch.autograd.grad(objective, [captured["z"]])
    dw = g[0, n - 1 : n + t - 1].T @ captured["h"][0, n - 1 : n + t - 1]
    assert score.components["pg"] == pytest.approx(float(dw.detach().abs().mean()), rel=1e-4)


def test_bfloat16_model_scores_in_float32() -> None:
    lm = LocalModel(tiny_llama(dtype=torch.bfloat16), tiny_tokenizer(), name="bf16")
    prompt, response = pairs(lm)[0]
    score = SemGradScorer(lm).score_batch([(prompt, response)])[0]
    ref = SemGradScorer(tiny_local_model()).score_batch([(prompt, response)])[0]
    assert score.value == pytest.approx(ref.value, rel=0.1)
    assert all(isinstance(v, float) and v == v for v in score.scores.values())


def test_result_carries_what_is_needed_to_recompute() -> None:
    lm = tiny_local_model()
    prompt, response = pairs(lm)[2]
    score = SemGradScorer(lm, method="hybridgrad").score_batch([(prompt, response)])[0]
    d = score.to_dict()
    assert d["method"] == "hybridgrad" and d["value"] == d["scores"]["hybridgrad"]
    assert d["direction"] == "higher_is_more_uncertain"
    assert d["prompt_ids"] == prompt and d["response_ids"] == response
    assert d["anchor_source"] == "default" and d["profile_id"] is None
    assert d["anchor_token"] == "<|im_start|>"
    assert {"forward", "backward", "total"} <= set(d["timings"])
    assert score.with_method("nll").value == score.scores["nll"]


def test_generation_cache_reuse_gives_the_same_score(monkeypatch) -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    generation = lm.generate(PROMPTS[0], max_new_tokens=6)
    assert generation.prefix_cache is not None
    fresh = scorer.score_batch([(generation.prompt_ids, generation.response_ids)])[0]

    def no_prompt_pass(*args, **kwargs):
        raise AssertionError("the prompt was run again")

    with monkeypatch.context() as patch:
        patch.setattr(scorer, "_prefix", no_prompt_pass)
        kept = scorer.score_generation(generation, release=False)
        reused = scorer.score_generation(generation)  # the cache is only read: reused again
    # ... and then released: a generation kept for later no longer holds it.
    assert generation.prefix_cache.prompt_columns(len(generation.prompt_ids), -1) is None
    recomputed = scorer.score_generation(generation)
    for key, value in fresh.scores.items():
        for score in (kept, reused, recomputed):
            assert score.scores[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


def test_batched_generations_reuse_their_caches_across_batches(monkeypatch) -> None:
    lm = tiny_local_model()
    # Two generation batches of different prompt widths, scored together: rows of the
    # narrower batch get zero columns for the padding that the wider prompts need.
    first = lm.generate_batch(PROMPTS[:2], max_new_tokens=5)
    second = lm.generate_batch(PROMPTS[2:], max_new_tokens=7)
    generations = [second[0], first[1], first[0], second[1]]
    scorer = SemGradScorer(lm, batch_size=4)
    fresh = scorer.score_batch([(g.prompt_ids, g.response_ids) for g in generations])

    def no_prompt_pass(*args, **kwargs):
        raise AssertionError("the prompt was run again")

    monkeypatch.setattr(scorer, "_prefix", no_prompt_pass)
    reused = scorer.score_batch(generations)
    for f, r, g in zip(fresh, reused, generations, strict=True):
        assert r.response_ids == g.response_ids
        for key, value in f.scores.items():
            assert r.scores[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


def test_sampled_generations_keep_no_cache() -> None:
    lm = tiny_local_model()
    samples = lm.generate_batch(PROMPTS[:1], max_new_tokens=3, do_sample=True,
                                num_return_sequences=2)
    assert all(g.prefix_cache is None for g in samples)


def test_answers_of_very_different_lengths_go_to_separate_chunks() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm, batch_size=16)
    prompt = lm.prompt_ids(PROMPTS[0])
    long_answer = [44 + i % 20 for i in range(40)]
    rows = [(prompt, [44, 2]), (prompt, long_answer), (prompt, [45, 2]), (prompt, long_answer)]
    results = scorer.score_batch(rows)
    assert [r.timings["batch_size"] for r in results] == [2.0, 2.0, 2.0, 2.0]
    assert [r.response_ids for r in results] == [tuple(r) for _, r in rows]  # input order
    alone = scorer.score_batch([rows[1]])[0]
    assert results[1].scores["semgrad"] == pytest.approx(alone.scores["semgrad"], rel=1e-4)


def test_a_short_answer_alone_scores_as_in_float64() -> None:
    """An answer of up to three tokens scored alone puts one to three rows through the
    output head's backward, which a matrix-vector kernel would sum over the vocabulary;
    on a head whose rows share a large vector that rounds to 7e-5 relative here."""
    lm = shared_component_model()
    scorer = SemGradScorer(lm, method="hybridgrad")
    generation = lm.generate(PROMPTS[0], max_new_tokens=12)
    rows = [(generation.prompt_ids, generation.response_ids[:n]) for n in (1, 2, 3, 12)]
    got = [scorer.score_batch([row])[0] for row in rows]
    lm.model.to(torch.float64)
    want = [scorer.score_batch([row])[0] for row in rows]
    for score, exact in zip(got, want, strict=True):
        for field in ("scores", "components", "features"):
            for name, value in getattr(exact, field).items():
                assert getattr(score, field)[name] == pytest.approx(
                    value, rel=2.5e-5, abs=1e-12), (len(score.response_ids), field, name)
