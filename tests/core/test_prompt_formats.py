"""Base models without a chat template get a plain question-answer prompt."""

from __future__ import annotations

import pytest

from semgrad_guard import ConfigError, PromptFormat, SemGradScorer, qa_prompt
from semgrad_guard.calibration import search_anchor

from .tiny import tiny_local_model, tiny_tokenizer


def test_plain_format_for_a_tokenizer_without_chat_template() -> None:
    lm = tiny_local_model(chat=False)
    assert lm.prompt_format.kind == "plain"
    text = lm.prompt_format.render(lm.tokenizer, qa_prompt("who wrote the moon ?"))
    assert text.startswith("Question: Please directly answer") and text.endswith("\nAnswer:")
    assert lm.prompt_format.default_anchor_offset(lm.tokenizer) == -1


def test_base_model_generates_scores_and_calibrates() -> None:
    lm = tiny_local_model(chat=False)
    # Word-level test tokenizers cannot match stop strings; real BPE tokenizers stop on "\n".
    generation = lm.generate(qa_prompt("who wrote the moon ?"), max_new_tokens=4,
                             stop_strings=None)
    assert generation.prompt_ids[-1] == lm.tokenizer.convert_tokens_to_ids(":")
    score = SemGradScorer(lm).score_generation(generation)
    assert score.anchor_token == ":" and score.anchor_source == "default"
    groups = [["who wrote the moon ?", "the moon was wrote by who ?"],
              ["where is the river ?", "the river is where ?"]]
    profile, _ = search_anchor(lm, groups, window=4, progress=False)
    # "Answer" and ":" belong to the template; the question's "?" must not be chosen.
    assert profile.anchor_offset in (-1, -2)
    assert profile.fixed_suffix_length == 2


def test_chat_format_needs_a_chat_template() -> None:
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        PromptFormat.for_tokenizer(tiny_tokenizer(chat=False), "chat")
    with pytest.raises(ConfigError, match="prompt format 'jinja' is not one of"):
        PromptFormat.for_tokenizer(tiny_tokenizer(), "jinja")


def test_system_prompt_is_part_of_the_prompt_and_its_fingerprint() -> None:
    tok = tiny_tokenizer()
    plain = PromptFormat.for_tokenizer(tok)
    with_system = PromptFormat.for_tokenizer(tok, system_prompt="the sky is blue")
    text = tok.decode(with_system.encode(tok, "who ?"))
    assert text.startswith("<|im_start|> system the sky is blue <|im_end|>")
    assert "system" not in tok.decode(plain.encode(tok, "who ?"))
    assert plain.fingerprint(tok) != with_system.fingerprint(tok)
