"""The scoring mode of a user's model: parameters frozen, eval mode, grad mode on; always
undone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def frozen_for_scoring(model: nn.Module) -> Iterator[None]:
    """Freeze parameters, switch to eval mode and enable grad mode, then restore.

    The user's ``requires_grad`` flags, train/eval mode and grad mode are put back in
    ``finally``, whatever happens inside.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    grad_mode = torch.is_grad_enabled()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        torch.set_grad_enabled(True)
        yield
    finally:
        torch.set_grad_enabled(grad_mode)
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
