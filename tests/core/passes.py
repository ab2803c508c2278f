"""Counting what a scoring pass runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from semgrad_guard import LocalModel


@contextmanager
def passes_of_block(lm: LocalModel, block: int) -> Iterator[list[int]]:
    """Counts the forward calls of one decoder block."""
    calls: list[int] = []
    handle = lm.layout.blocks[block].register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def linear_forwards() -> Iterator[list[int]]:
    """Counts the calls of every linear layer's own forward (not one given in its place)."""
    calls: list[int] = []
    own = nn.Linear.forward

    def counted(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return own(self, x)
    nn.Linear.forward = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        nn.Linear.forward = own  # type: ignore[method-assign]
