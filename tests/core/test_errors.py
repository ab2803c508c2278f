"""Bad input raises a typed error that names the problem."""

from __future__ import annotations

import pytest
import torch

from semgrad_guard import (
    ConfigError,
    ContextWindowError,
    EmptyResponseError,
    GradientAccessError,
    LocalModel,
    SemGradScorer,
    TokenizerMismatchError,
)
from semgrad_guard.model import model_layout

from .tiny import tiny_llama, tiny_local_model, tiny_tokenizer


@pytest.fixture(scope="module")
def scorer() -> SemGradScorer:
    return SemGradScorer(tiny_local_model())


def prompt(scorer: SemGradScorer) -> list[int]:
    return scorer.model.prompt_ids("what is the color of the sky ?")


def test_empty_response(scorer: SemGradScorer) -> None:
    with pytest.raises(EmptyResponseError, match="empty response"):
        scorer.score_batch([(prompt(scorer), [])])[0]


def test_prompt_over_the_context_window(scorer: SemGradScorer) -> None:
    with pytest.raises(ContextWindowError, match=r"context window: 90 prompt \+ 10 response tokens = 100 > 96"):
        scorer.score_batch([([5] * 90, [6] * 10)])[0]


def test_token_outside_the_embedding(scorer: SemGradScorer) -> None:
    with pytest.raises(TokenizerMismatchError, match="token id 500 is outside the model's embedding of 128 rows"):
        scorer.score_batch([(prompt(scorer), [500])])[0]


def test_tokenizer_larger_than_the_model() -> None:
    lm = LocalModel(tiny_llama(vocab_size=64), tiny_tokenizer(), name="small-vocab")
    with pytest.raises(TokenizerMismatchError, match="mismatched tokenizer"):
        SemGradScorer(lm).score_batch([([1, 5, 2, 1, 12], [6])])[0]


def test_model_without_gradient_access() -> None:
    with pytest.raises(GradientAccessError, match="not a torch module"):
        model_layout(object())
    with pytest.raises(GradientAccessError, match="cannot find the decoder blocks"):
        LocalModel(torch.nn.Linear(4, 4), tiny_tokenizer())


def test_inference_mode_has_no_gradient_access(scorer: SemGradScorer) -> None:
    with torch.inference_mode(), pytest.raises(GradientAccessError, match="inference_mode"):
        scorer.score_batch([(prompt(scorer), [6, 2])])[0]


def test_bad_anchor_configuration() -> None:
    lm = tiny_local_model()
    with pytest.raises(ConfigError, match="must be negative"):
        SemGradScorer(lm, anchor_offset=0)
    with pytest.raises(ValueError, match="layer 9 is not an anchor candidate: use 0..3"):
        SemGradScorer(lm, layers=(9,))
    with pytest.raises(ConfigError, match="unknown score method 'semgard'"):
        SemGradScorer(lm, method="semgard")
