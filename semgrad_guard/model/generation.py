"""The trace of one generation: the exact ids the model saw and produced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class KeptStates:
    """Hidden states a generation kept for scoring (:meth:`LocalModel.keep_hidden_state`):
    per layer ``[batch, prompt_columns + fed, dim]``, the prompt's last ``prompt_columns``
    columns then one column per token fed back while decoding; ``tokens`` are each row's
    generated ids, the first ``fed`` of which were fed.

    ``outputs`` (:meth:`LocalModel.keep_layer_outputs`) are the outputs of linear layers
    over the same columns, by :meth:`ModelLayout.linear_layers` name, except the output
    head's (``"head"``): its logits over the prompt's last column then each column fed,
    ``[batch, 1 + fed, vocabulary]``."""

    layers: dict[int, torch.Tensor]
    prompt_columns: int
    tokens: list[tuple[int, ...]]
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def steps(self, row: int) -> int:
        """How many of ``row``'s generated tokens have a kept state."""
        fed = next(iter(self.layers.values())).shape[1] - self.prompt_columns
        return min(fed, len(self.tokens[row]))


class PrefixCache:
    """The keys and values generation computed for one row's prompt.

    Generation left-pads a batch's prompts to one width, so every row's prompt ends at
    column ``width`` of the batch's cache. Scoring takes the columns before its anchor
    from here instead of recomputing them. The cache is only read (a scorer builds its
    own from slices), so several scorers can share it; the last one releases it, since a
    generation kept for later (a history, an audit) should not keep its cache alive.
    """

    def __init__(self, cache: Any, row: int, width: int,
                 states: KeptStates | None = None) -> None:
        self._cache = cache
        self.row = row
        self.width = width
        self._states = states

    def release(self) -> None:
        """Drop this row's hold on the cache; later scores recompute the prompt."""
        self._cache = None
        self._states = None

    def hidden_state(self, layer: int, offset: int, response: Sequence[int]
                     ) -> torch.Tensor | None:
        """This row's hidden state ``layer`` as generation computed it, over the columns
        a teacher-forced pass over ``response`` runs from ``offset`` (< 0) columns before
        the prompt's end: the prompt's last ``-offset`` columns, then ``response[:-1]``
        (its last token is predicted, never fed). ``[1, columns, dim]``; None when it was
        not kept, or when ``response`` is not what generation fed."""
        states = self._kept(offset, response)
        if states is None or layer not in states.layers:
            return None
        fed = len(response) - 1
        return states.layers[layer][self.row:self.row + 1,
                                    states.prompt_columns + offset:states.prompt_columns + fed]

    def layer_outputs(self, offset: int, response: Sequence[int]
                      ) -> dict[str, torch.Tensor] | None:
        """This row's kept outputs of linear layers (:class:`KeptStates`) over the columns
        of :meth:`hidden_state`, ``[1, columns, width]`` each, and the head's logits over
        the prompt's last column then ``response[:-1]`` (``[1, len(response),
        vocabulary]``); None when they were not kept, or when ``response`` is not what
        generation fed."""
        states = self._kept(offset, response)
        if states is None or not states.outputs:
            return None
        fed = len(response) - 1
        row = slice(self.row, self.row + 1)
        return {name: (kept[row, :1 + fed] if name == "head" else
                       kept[row, states.prompt_columns + offset:states.prompt_columns + fed])
                for name, kept in states.outputs.items()}

    def kept_bytes(self) -> int:
        """Bytes of the hidden states and layer outputs kept by this row's generation call
        (shared by its rows), 0 once released."""
        states = self._states
        if states is None:
            return 0
        return sum(t.numel() * t.element_size()
                   for t in (*states.layers.values(), *states.outputs.values()))

    def _kept(self, offset: int, response: Sequence[int]) -> KeptStates | None:
        """What this row kept, when it covers a pass over ``response`` from ``offset``."""
        states = self._states
        if self._cache is None or states is None:
            return None
        fed = len(response) - 1
        if -offset > states.prompt_columns or fed > states.steps(self.row) \
                or tuple(response[:fed]) != states.tokens[self.row][:fed]:
            return None
        return states

    def prompt_columns(self, width: int, stop: int
                       ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per layer, this row's (keys, values) over the last ``width`` prompt columns up
        to ``stop`` columns before the prompt's end (``stop`` <= 0), as a batch of one.

        Columns left of this row's batch (the scorer's chunk may hold longer prompts)
        are zeros: they are padding, masked out of attention. None once released, or when
        the cache cannot be cut exactly (sliding-window or quantized layers).
        """
        cache = self._cache
        if cache is None or type(cache).__name__ != "DynamicCache" or any(
                type(layer).__name__ != "DynamicLayer" for layer in cache.layers):
            return None
        start, end = self.width - width, self.width + stop
        if end <= max(start, 0):
            return None

        def cut(t: torch.Tensor) -> torch.Tensor:
            part = t[self.row:self.row + 1, :, max(start, 0):end]
            if start < 0:
                pad = part.new_zeros((*part.shape[:2], -start, part.shape[3]))
                part = torch.cat([pad, part], dim=2)
            return part

        return [(cut(layer.keys), cut(layer.values)) for layer in cache.layers]


@dataclass(frozen=True)
class Generation:
    """One answer with the exact ids behind it.

    ``response_ids`` include the end-of-turn token when generation stopped on it, so a
    teacher-forced pass over ``prompt_ids + response_ids`` sees what generation saw.
    ``text`` is the answer as a reader sees it: special tokens, surrounding whitespace
    and the stop string that ended it left out. When nothing is left, the model gave
    no answer (:attr:`no_answer`): there is nothing to score, and scoring it raises
    :class:`~semgrad_guard.EmptyResponseError`.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    text: str
    stop_reason: Literal["eos", "length", "stop_string"]
    prompt_text: str = ""
    seconds: float = 0.0
    prefix_cache: PrefixCache | None = field(default=None, repr=False, compare=False)

    @property
    def no_answer(self) -> bool:
        """Whether generation produced no content (only whitespace, special tokens or a
        stop string, or no token at all)."""
        return not self.text.strip()

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_ids": list(self.prompt_ids), "response_ids": list(self.response_ids),
                "text": self.text, "stop_reason": self.stop_reason,
                "no_answer": self.no_answer,
                "prompt_text": self.prompt_text, "seconds": self.seconds}
