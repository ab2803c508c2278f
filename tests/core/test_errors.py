"""Bad input raises a typed error that names the problem."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from semgrad_guard import (
    ConfigError,
    ContextWindowError,
    EmptyResponseError,
    GradientAccessError,
    InvalidTextError,
    LocalModel,
    ModelProfile,
    NonFiniteScoreError,
    ResponseTooLongError,
    SemGradScorer,
    TokenizerMismatchError,
)
from semgrad_guard.model import model_layout
from semgrad_guard.model.vocabulary import tokenizer_fingerprint
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig
from semgrad_guard.review import open_review_queue
from semgrad_guard.scoring.semgrad import DEFAULT_MAX_RESPONSE_TOKENS

from .reference import naive_features
from .tiny import tiny_bert_tokenizer, tiny_llama, tiny_local_model, tiny_tokenizer


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


# -- scoring validation: non-finite values, empty text, wrong tokenizer, maximum length ------
def rule_out(lm: LocalModel, token: int, value: float = float("-inf")) -> torch.utils.hooks.RemovableHandle:
    """Make the model put ``value`` on one vocabulary entry's logit at every position."""
    def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return output.index_fill(-1, torch.tensor([token]), value)
    return lm.model.lm_head.register_forward_hook(hook)


def test_a_token_ruled_out_by_a_minus_infinite_logit_leaves_every_score_finite() -> None:
    """0 log 0 = 0: a token of probability zero adds no entropy (it made SemGrad NaN)."""
    lm = tiny_local_model()
    prompt = lm.prompt_ids("what is the color of the sky ?")
    response = [44, 73, 68, 2]
    handle = rule_out(lm, 7)
    try:
        scorer = SemGradScorer(lm, anchor_offset=-1, layers=(2, 3))
        score = scorer.score_batch([(prompt, response)])[0]
        want = naive_features(lm.model, prompt, response, -1, (-1, -2, -3), (2, 3))
    finally:
        handle.remove()
    assert all(math.isfinite(v) for v in (*score.scores.values(), *score.features.values()))
    for name, value in want.items():
        assert score.features[name] == pytest.approx(value, rel=1e-4, abs=1e-9), name


@pytest.mark.parametrize(("token", "value"), [(73, float("-inf")), (7, float("nan"))],
                         ids=["answer-token-ruled-out", "nan-logit"])
def test_a_non_finite_pass_raises_a_typed_error(token: int, value: float) -> None:
    lm = tiny_local_model()
    handle = rule_out(lm, token, value)
    try:
        with pytest.raises(NonFiniteScoreError, match="non-finite values: .*(nan|inf)"):
            SemGradScorer(lm).score_batch([(lm.prompt_ids("what is the sky ?"),
                                            [44, 73, 68, 2])])
    finally:
        handle.remove()


def test_a_broken_pass_follows_the_failure_mode_and_is_recorded(tmp_path: Path) -> None:
    """A rule reading nll escalates; the pass had non-finite values. The case and the
    audit row are written, the answer marked unscored."""
    lm = tiny_local_model()
    queue = open_review_queue(tmp_path / "queue.db")
    audit = AuditTrail(tmp_path / "audit.db")
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "score": "nll", "threshold": {"max_score": 1e-9}, "actions": ["escalate"]}})
    guard = Guard(policy, scorer=SemGradScorer(lm, method="nll"), review_queue=queue,
                  audit=audit)
    generation = lm.generate("what is the color of the sky ?", max_new_tokens=4)
    handle = rule_out(lm, 9, float("nan"))
    try:
        decision = guard.check("what is the color of the sky ?", generation.text,
                               generation=generation)
    finally:
        handle.remove()
    assert decision.action == "escalate" and "score_failed" in decision.flags
    assert (decision.attempts[0].error or "").startswith("NonFiniteScoreError")
    assert queue.get(decision.case_id or "").score is None
    assert [r.case_id for r in audit.records()] == [decision.case_id]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_answer_text(scorer: SemGradScorer, text: str) -> None:
    with pytest.raises(EmptyResponseError, match="empty answer text"):
        scorer.score_text("what is the color of the sky ?", text)


def test_a_lone_surrogate_is_named_before_the_tokenizer_sees_it(scorer: SemGradScorer) -> None:
    """The tokenizer raised a bare TypeError for a str holding a lone surrogate."""
    lm = scorer.model
    with pytest.raises(InvalidTextError, match=r"the answer text holds a lone surrogate "
                                               r"\('\\ud800'\) at position 5"):
        scorer.score_text("what is the color of the sky ?", "blue \ud800 sky")
    with pytest.raises(InvalidTextError, match=r"the prompt's user message holds a lone "
                                               r"surrogate \('\\udfff'\) at position 4"):
        scorer.score_text("what\udfff is the color of the sky ?", "blue")
    with pytest.raises(InvalidTextError, match=r"the prompt's system message .* position 0"):
        lm.generate([{"role": "system", "content": "\ud83d"},
                     {"role": "user", "content": "what is the sky ?"}], max_new_tokens=2)
    with pytest.raises(InvalidTextError, match="the answer text must be a str, got bytes"):
        lm.response_ids(b"blue")  # type: ignore[arg-type]
    # Valid text beyond the Basic Multilingual Plane (a surrogate pair in UTF-16) is fine.
    assert scorer.score_text("what is the sky ?", "blue \U0001f30d").retokenized


def test_a_tokenizer_whose_special_tokens_are_not_the_models() -> None:
    """Every id of a BERT-style tokenizer fits the embedding: only the special tokens tell."""
    lm = LocalModel(tiny_llama(), tiny_bert_tokenizer(), name="bert-on-llama")
    assert len(lm.tokenizer) <= lm.layout.vocab_rows
    with pytest.raises(TokenizerMismatchError,
                       match=r"id 1 \(config.bos_token_id, generation_config.bos_token_id\) "
                             r"is '\[unused0\]', not a special token; id 2 .* is '\[unused1\]'"):
        SemGradScorer(lm)


def test_a_profile_calibrated_with_another_tokenizer_is_refused() -> None:
    lm = tiny_local_model()
    profile = ModelProfile(model_name="tiny", model_fingerprint="m", template_fingerprint="t",
                           anchor_offset=-1, layers=(2, 3),
                           tokenizer_fingerprint=tokenizer_fingerprint(lm.tokenizer))
    assert ModelProfile.from_json(profile.to_json()) == profile
    assert SemGradScorer(lm, profile=profile).anchor.source == "profile"
    # Profiles made before fingerprints were recorded are used unchecked.
    assert SemGradScorer(lm, profile=replace(profile, tokenizer_fingerprint={})).profile
    other = tiny_tokenizer()
    other.add_tokens(["zebra"])
    with pytest.raises(TokenizerMismatchError, match=f"calibrated with another tokenizer: "
                       f"{len(lm.tokenizer)} tokens, the profile's {len(lm.tokenizer) + 1}"):
        SemGradScorer(lm, profile=replace(profile, tokenizer_fingerprint=tokenizer_fingerprint(
            other)))
    renamed = dict(tokenizer_fingerprint(lm.tokenizer), vocabulary="0123456789abcdef")
    with pytest.raises(TokenizerMismatchError, match="same size and special tokens, but the "
                                                     "vocabulary differs"):
        SemGradScorer(lm, profile=replace(profile, tokenizer_fingerprint=renamed))
    moved = tokenizer_fingerprint(lm.tokenizer)
    moved["special"] = {**moved["special"], "eos_token": ["</s>", 3]}
    with pytest.raises(TokenizerMismatchError,
                       match=r"eos_token '<\|im_end\|>' \(id 2\), the profile's '</s>' \(id 3\)"):
        SemGradScorer(lm, profile=replace(profile, tokenizer_fingerprint=moved))


def test_a_response_over_the_maximum_scored_length() -> None:
    lm = tiny_local_model()
    prompt = lm.prompt_ids("what is the sky ?")
    assert SemGradScorer(lm).max_response_tokens == DEFAULT_MAX_RESPONSE_TOKENS
    bounded = SemGradScorer(lm, max_response_tokens=4)
    assert bounded.score_batch([(prompt, [44, 45, 46, 2])])[0].features["answer_tokens"] == 4
    with pytest.raises(ResponseTooLongError,
                       match="response of 5 tokens is longer than max_response_tokens=4"):
        bounded.score_batch([(prompt, [44, 45, 46, 47, 2])])[0]
    assert SemGradScorer(lm, max_response_tokens=None).score_batch([(prompt, [44] * 40 + [2])])[0]
    with pytest.raises(ConfigError, match="max_response_tokens must be at least 1"):
        SemGradScorer(lm, max_response_tokens=0)
