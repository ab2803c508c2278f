"""Stop strings end an answer only once it has content; an answer without content is
"no answer", never scored."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from semgrad_guard import EmptyResponseError, LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.model.stopping import StopAfterContent, blank_tokens, cut_at_stop

from .tiny import tiny_bpe_model

QUESTION = "what is the color of the sky?"


class Scripted(LogitsProcessor):
    """Makes the model write ``script`` token by token (then repeat its last token)."""

    def __init__(self, prompt_width: int, script: Sequence[int]) -> None:
        self.width, self.script = prompt_width, list(script)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        step = min(input_ids.shape[1] - self.width, len(self.script) - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.script[step]] = 0.0
        return forced


def ids(lm: LocalModel, text: str) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def scripted(lm: LocalModel, text: str, prompt: object = None, **kwargs: object) -> object:
    prompt = qa_prompt(QUESTION) if prompt is None else prompt
    width = len(lm.prompt_ids(prompt))  # type: ignore[arg-type]
    processor = LogitsProcessorList([Scripted(width, ids(lm, text))])
    return lm.generate(prompt, logits_processor=processor, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plain() -> LocalModel:
    return tiny_bpe_model(chat=False)


@pytest.fixture(scope="module")
def chat() -> LocalModel:
    return tiny_bpe_model(chat=True)


def test_a_leading_newline_does_not_end_a_plain_answer(plain: LocalModel) -> None:
    g = scripted(plain, "\n blue\n red", max_new_tokens=12)
    assert g.text == "blue" and g.stop_reason == "stop_string"  # type: ignore[attr-defined]
    # The answer's ids run to the newline that ended it, the leading one included.
    assert list(g.response_ids) == ids(plain, "\n blue\n")  # type: ignore[attr-defined]
    assert not g.no_answer  # type: ignore[attr-defined]


def test_a_leading_newline_does_not_end_a_chat_answer(chat: LocalModel) -> None:
    g = scripted(chat, "\n\n blue\n red", max_new_tokens=12, stop_strings=["\n"])
    assert g.text == "blue" and g.stop_reason == "stop_string"  # type: ignore[attr-defined]
    assert list(g.response_ids) == ids(chat, "\n\n blue\n")  # type: ignore[attr-defined]
    # Without stop strings a chat answer runs on.
    g = scripted(chat, "\n blue\n red", max_new_tokens=8)
    assert g.stop_reason == "length" and g.text.startswith("blue\n red")  # type: ignore[attr-defined]


def test_a_text_stop_string_is_cut_from_the_answer(plain: LocalModel) -> None:
    g = scripted(plain, " blue Question: red", max_new_tokens=12, stop_strings=["Question"])
    assert g.stop_reason == "stop_string" and g.text == "blue"  # type: ignore[attr-defined]
    assert plain.tokenizer.decode(g.response_ids).endswith("Question")  # type: ignore[attr-defined]


def test_a_model_that_only_breaks_lines_gives_no_answer(plain: LocalModel) -> None:
    newline = ids(plain, "\n")[0]
    bias = torch.zeros(len(plain.tokenizer))
    bias[newline] = 1e4
    hook = plain.model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    try:
        g = plain.generate(qa_prompt(QUESTION), max_new_tokens=5)
    finally:
        hook.remove()
    # Every token is a newline: none ends the answer, which never begins.
    assert list(g.response_ids) == [newline] * 5 and g.stop_reason == "length"
    assert g.no_answer and g.text == "" and g.to_dict()["no_answer"] is True
    with pytest.raises(EmptyResponseError, match="no answer: the response's 5 tokens hold no text"):
        SemGradScorer(plain).score_generation(g)


def test_an_end_of_turn_first_is_no_answer(chat: LocalModel) -> None:
    g = scripted(chat, "<|im_end|>", max_new_tokens=4, prompt="what ?")
    assert g.stop_reason == "eos" and g.no_answer  # type: ignore[attr-defined]
    with pytest.raises(EmptyResponseError, match="no answer"):
        SemGradScorer(chat).score_generation(g)  # type: ignore[arg-type]
    with pytest.raises(EmptyResponseError, match="no answer"):
        SemGradScorer(chat).score_text("what ?", "  ")


def test_the_criterion_on_a_padded_batch(plain: LocalModel) -> None:
    tok = plain.tokenizer
    stop = StopAfterContent(tok, ["\n"], prompt_length=3)
    pad = tok.pad_token_id
    rows = [[pad, *ids(plain, "Answer:"), *ids(plain, "\n\n")],
            [pad, *ids(plain, "Answer:"), *ids(plain, " blue\n")],
            [pad, *ids(plain, "Answer:"), *ids(plain, " blue red")]]
    width = max(map(len, rows))
    batch = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    stop.prompt_length = width - 2
    assert stop.matches(batch).tolist() == [True, True, False]
    assert stop.has_content(batch).tolist() == [False, True, True]
    assert stop(batch, None).tolist() == [False, True, False]  # type: ignore[arg-type]
    blank = blank_tokens(tok)
    assert bool(blank[ids(plain, "\n")[0]]) and not bool(blank[ids(plain, " blue")[-1]])
    assert bool(blank[tok.eos_token_id])


def test_cut_at_stop() -> None:
    assert cut_at_stop("\n blue\n", "\n blue", ["\n"]) == "\n blue"
    assert cut_at_stop("blue stop", "blue st", ["stop", "\n"]) == "blue "
    # A stop string that does not reach into the last token did not end the answer.
    assert cut_at_stop("stop blue", "stop bl", ["stop"]) == "stop blue"


class PerRow(LogitsProcessor):
    """Makes each row of a batch write its own script."""

    def __init__(self, prompt_width: int, scripts: Sequence[Sequence[int]]) -> None:
        self.width, self.scripts = prompt_width, [list(s) for s in scripts]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[min(input_ids.shape[1] - self.width, len(script) - 1)]] = 0.0
        return forced


def test_padding_after_a_stop_string_is_not_an_end_of_turn() -> None:
    # Many tokenizers pad with their end-of-turn token: a row that stopped on a stop
    # string early in a batch is padded with it, and that padding is not generated.
    base = tiny_bpe_model(chat=False)
    tok = base.tokenizer
    tok.pad_token = tok.eos_token
    lm = LocalModel(base.model, tok, name="pads-with-eos")
    assert lm.pad_id in lm.eos_ids
    prompts = [qa_prompt(QUESTION), qa_prompt("who wrote the moon?")]
    width = max(len(lm.prompt_ids(p)) for p in prompts)
    scripts = [ids(lm, " blue\n red"), [*ids(lm, " the sun and the moon"), tok.eos_token_id]]
    short, long = lm.generate_batch(prompts, max_new_tokens=32,
                                    logits_processor=LogitsProcessorList([PerRow(width, scripts)]))
    assert short.stop_reason == "stop_string" and list(short.response_ids) == ids(lm, " blue\n")
    assert short.text == "blue"
    assert long.stop_reason == "eos" and long.response_ids[-1] == tok.eos_token_id
    assert long.text == "the sun and the moon"
