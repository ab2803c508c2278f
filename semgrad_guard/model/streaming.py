"""A generation read as it is produced, ending in its exact trace."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from .generation import Generation


class GenerationStream:
    """The text of a generation while a worker thread produces it, then the generation.

    Iterate over the text pieces; :meth:`result` waits for the end and returns the
    :class:`Generation` with its exact ids, or raises what generation raised. The pieces
    are the text transformers' ``TextIteratorStreamer`` decodes, less the whitespace the
    finished ``Generation.text`` strips (leading, and trailing until more text follows),
    so with byte-level and sentencepiece tokenizers they add up to that text. A stream
    has one reader, and is read once.

    ``generate`` runs generation with the transformers streamer it is given; see
    :meth:`LocalModel.stream <semgrad_guard.LocalModel.stream>`.
    """

    def __init__(self, tokenizer: Any, generate: Callable[[Any], Generation]) -> None:
        from transformers import TextIteratorStreamer

        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True,
                                              skip_special_tokens=True)
        self._done = threading.Event()
        self._generation: Generation | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._work, args=(generate,), name="semgrad-generate",
                         daemon=True).start()

    def _work(self, generate: Callable[[Any], Generation]) -> None:
        try:
            self._generation = generate(self._streamer)
        except BaseException as exc:  # re-raised in the reading thread by result()
            self._error = exc
            self._streamer.end()  # unblocks the reader
        finally:
            self._done.set()

    def __iter__(self) -> Iterator[str]:
        raw = emitted = ""
        for piece in self._streamer:
            raw += piece
            visible = raw.strip()
            if len(visible) > len(emitted) and visible.startswith(emitted):
                delta, emitted = visible[len(emitted):], visible
                yield delta

    def result(self) -> Generation:
        """The finished generation (waits for it; raises what generation raised)."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        if self._generation is None:  # pragma: no cover - the worker sets one or the other
            raise RuntimeError("the streamed generation ended without a result")
        return self._generation
