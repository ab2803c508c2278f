"""The forward hook that takes the anchor layers' hidden states out of a pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def capture_hook(layer: int, lowest: int, into: dict[int, torch.Tensor], *,
                 first_only: bool = False) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook on the module producing hidden state ``layer`` that keeps its output
    in ``into[layer]``. At the ``lowest`` anchor layer the output is cut from its past and
    made a leaf, and the pass goes on from the leaf: the backward pass stops there, so
    nothing below it needs a gradient. ``first_only`` keeps the first call's output and
    leaves later calls (decode steps) alone."""
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if first_only and layer in into:
            return None
        h = output[0] if isinstance(output, tuple) else output
        if layer == lowest:
            h = h.detach().requires_grad_(True)
        into[layer] = h
        if layer != lowest:
            return None
        return (h, *output[1:]) if isinstance(output, tuple) else h
    return hook
