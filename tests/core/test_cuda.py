"""The scoring engine, generation and P(True) on a CUDA device agree with the CPU.

Skipped where torch sees no CUDA device (the CI machines); run on a GPU machine with
``pytest tests/core/test_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch

from semgrad_bench.ptrue import PTrueScorer
from semgrad_guard import LocalModel, SemGradScorer
from semgrad_guard.model.clock import describe

from .test_scores import PROMPTS, pairs
from .tiny import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def on(device: str) -> LocalModel:
    model = tiny_llama().to(device)
    return LocalModel(model, tiny_tokenizer(), name="tiny-llama")


def test_scores_on_cuda_match_cpu() -> None:
    cpu, gpu = on("cpu"), on("cuda")
    assert gpu.device.type == "cuda" and "CUDA" in describe(gpu.device)
    for hybrid in (True, False):
        want = SemGradScorer(cpu, hybrid=hybrid).score_batch(pairs(cpu))
        got = SemGradScorer(gpu, hybrid=hybrid).score_batch(pairs(gpu))
        for w, g in zip(want, got, strict=True):
            assert set(g.scores) == set(w.scores)
            for key, value in w.scores.items():
                assert g.scores[key] == pytest.approx(value, rel=2e-3, abs=1e-7), key
            assert g.timings["total"] > 0


def test_generation_and_cache_reuse_on_cuda() -> None:
    cpu, gpu = on("cpu"), on("cuda")
    want = cpu.generate_batch(PROMPTS, max_new_tokens=6)
    got = gpu.generate_batch(PROMPTS, max_new_tokens=6)
    assert [g.response_ids for g in got] == [w.response_ids for w in want]
    generation = gpu.generate(PROMPTS[0], max_new_tokens=6)
    scorer = SemGradScorer(gpu)
    reused = scorer.score_generation(generation)
    fresh = scorer.score_batch([(generation.prompt_ids, generation.response_ids)])[0]
    for key, value in fresh.scores.items():
        assert reused.scores[key] == pytest.approx(value, rel=2e-3, abs=1e-7), key


def test_p_true_on_cuda_matches_cpu() -> None:
    qa = [("what is the color of the sky ?", "blue"), ("who wrote the moon ?", "the cat")]
    want, _ = PTrueScorer(on("cpu"), batch_size=2).score_batch(qa)
    got, seconds = PTrueScorer(on("cuda"), batch_size=2).score_batch(qa)
    assert got == pytest.approx(want, rel=2e-3, abs=1e-6)
    assert seconds > 0
