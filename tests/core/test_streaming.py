"""LocalModel.stream: the text of a generation as it comes, then the generation itself,
the same as generate() gives."""

from __future__ import annotations

from typing import Any

import pytest

from semgrad_guard.model.generation import Generation
from semgrad_guard.model.streaming import GenerationStream

from .tiny import tiny_local_model, tiny_tokenizer

PROMPT = "what is the color of the sky ?"


def test_the_pieces_add_up_to_the_generation_generate_gives() -> None:
    lm = tiny_local_model()
    stream = lm.stream(PROMPT, max_new_tokens=12)
    pieces = list(stream)
    streamed = stream.result()
    plain = lm.generate(PROMPT, max_new_tokens=12)
    assert (streamed.prompt_ids, streamed.response_ids) == (plain.prompt_ids, plain.response_ids)
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == streamed.text == plain.text


def test_whitespace_the_finished_text_strips_is_held_back() -> None:
    text = [" ", "\nParis", " ", "and", "\n ", " Rome", "\n"]

    def generate(streamer: Any) -> Generation:
        for piece in text:  # what the streamer decodes, piece by piece
            streamer.on_finalized_text(piece)
        streamer.on_finalized_text("", stream_end=True)
        return Generation((1,), (2,), "".join(text).strip(), "length")

    stream = GenerationStream(tiny_tokenizer(), generate)
    assert list(stream) == ["Paris", " and", "\n  Rome"]
    assert stream.result().text == "Paris and\n  Rome"


def test_a_failed_generation_ends_the_stream_and_is_raised_by_result() -> None:
    lm = tiny_local_model()
    stream = lm.stream(PROMPT, max_new_tokens=4, not_a_generate_argument=True)
    assert list(stream) == []
    with pytest.raises(ValueError, match="not_a_generate_argument"):
        stream.result()
