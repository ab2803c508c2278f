"""Base models without a chat template get a plain question-answer prompt."""

from __future__ import annotations

import pytest

from semgrad_guard import ConfigError, PromptFormat, SemGradScorer, qa_prompt
from semgrad_guard.calibration import search_anchor
from semgrad_guard.model.prompts import PLAIN_EXAMPLES, PLAIN_INSTRUCTION, QA_INSTRUCTION

from .tiny import tiny_bpe_model, tiny_local_model, tiny_tokenizer


def test_plain_format_for_a_tokenizer_without_chat_template() -> None:
    lm = tiny_local_model(chat=False)
    assert lm.prompt_format.kind == "plain"
    text = lm.prompt_format.render(lm.tokenizer, qa_prompt("who wrote the moon ?"))
    # The instruction comes first, then the demonstrations, then the question as the
    # question: nothing of the chat instruction inside it.
    assert text.startswith(PLAIN_INSTRUCTION + "\n\nQuestion: " + PLAIN_EXAMPLES[0][0])
    assert text.endswith("\n\nQuestion: who wrote the moon ?\nAnswer:")
    assert "Please directly answer" not in text
    for question, answer in PLAIN_EXAMPLES:
        assert f"Question: {question}\nAnswer: {answer}\n\n" in text
    assert lm.prompt_format.default_anchor_offset(lm.tokenizer) == -1
    # A bare string is asked the same way.
    assert lm.prompt_format.render(lm.tokenizer, "who wrote the moon ?") == text


def test_chat_format_sends_the_reference_message() -> None:
    tok = tiny_tokenizer()
    fmt = PromptFormat.for_tokenizer(tok)
    reference = [{"role": "user", "content": QA_INSTRUCTION.format(question="who ?")}]
    assert fmt.render(tok, qa_prompt("who ?")) == fmt.render(tok, reference)
    assert fmt.encode(tok, qa_prompt("who ?")) == fmt.encode(tok, reference)


def test_plain_preamble_is_configurable_and_in_the_fingerprint() -> None:
    tok = tiny_tokenizer(chat=False)
    default = PromptFormat(kind="plain")
    bare = PromptFormat(kind="plain", plain_instruction=None, plain_examples=())
    one = PromptFormat(kind="plain", plain_examples=(("who wrote the sun ?", "the moon"),))
    assert bare.render(tok, qa_prompt("who ?")) == "Question: who ?\nAnswer:"
    assert one.render(tok, qa_prompt("who ?")) == (
        f"{PLAIN_INSTRUCTION}\n\nQuestion: who wrote the sun ?\nAnswer: the moon\n\n"
        "Question: who ?\nAnswer:")
    # A system prompt and earlier turns keep their places around the preamble.
    system = PromptFormat(kind="plain", system_prompt="be brief", plain_examples=())
    chat = [{"role": "user", "content": "who ?"}, {"role": "assistant", "content": "me"},
            {"role": "user", "content": "why ?"}]
    assert system.render(tok, chat) == (f"be brief\n\n{PLAIN_INSTRUCTION}\n\nQuestion: who ?\n"
                                        "Answer: me\n\nQuestion: why ?\nAnswer:")
    prints = {f.fingerprint(tok) for f in (default, bare, one, system)}
    assert len(prints) == 4
    assert PromptFormat(kind="plain").fingerprint(tok) == default.fingerprint(tok)
    with pytest.raises(ConfigError, match="a plain-prompt example is a"):
        PromptFormat(kind="plain", plain_examples=(("who ?", " "),))


def test_base_model_generates_scores_and_calibrates() -> None:
    lm = tiny_bpe_model(chat=False)
    generation = lm.generate(qa_prompt("who wrote the moon?"), max_new_tokens=4)
    assert lm.tokenizer.decode(generation.prompt_ids[-1:]) == ":"
    assert not generation.no_answer
    score = SemGradScorer(lm).score_generation(generation)
    assert score.anchor_token == ":" and score.anchor_source == "default"
    groups = [["who wrote the moon?", "the moon was wrote by who?"],
              ["where is the river?", "the river is where?"],
              ["what color is the sky?", "the sky is what color?"]]
    profile, _ = search_anchor(lm, groups, window=8, progress=False)
    # The template tail is "\nAnswer:": the demonstrations before the question, which
    # every prompt shares, are never anchor candidates, nor is the question's "?".
    assert profile.fixed_suffix_length == 3
    assert profile.anchor_offset in (-1, -2, -3)
    assert profile.anchor_token in ("\n", "Answer", ":")
    assert profile.template_fingerprint == lm.prompt_format.fingerprint(lm.tokenizer)


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
