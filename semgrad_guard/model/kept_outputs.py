"""The outputs of linear layers a generation keeps for scoring it.

Scoring a generation runs a teacher-forced pass over columns generation has just
computed, through the blocks from the lowest anchor layer up. Most of that pass's
forward work is its linear layers (and the output head), whose outputs generation
computed too: kept, they spare the pass every matrix product of its forward, since the
backward pass needs of a linear layer only its weight. What the pass still computes is
what lies between them (norms, rotary embeddings, attention, activations).

Each column kept costs one output vector per linear layer per row (on the default model
about 0.5 MB: 15 blocks of 5,184 values and 49,152 logits), so a generation keeps them
only while they fit in a limit (:attr:`LocalModel.kept_outputs_limit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class OutputKeeper:
    """Forward hooks that keep, during one generation, the output of each module of
    ``modules`` (``"head"``: the output head) over the prompt's last ``prompt_columns``
    columns (the head's over its last column), then over every column fed back, while
    all of it stays within ``limit`` bytes."""

    def __init__(self, modules: Mapping[str, nn.Module], prompt_columns: int,
                 limit: int) -> None:
        self.modules = modules
        self.prompt_columns = prompt_columns
        self.limit = limit
        self.parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
        self.widths: dict[str, list[int]] = {name: [] for name in modules}
        self.bytes = 0
        self.over = False

    def hooks(self) -> list[tuple[nn.Module, Any]]:
        return [(module, self._hook(name)) for name, module in self.modules.items()]

    def _hook(self, name: str) -> Any:
        parts, widths = self.parts[name], self.widths[name]
        columns = 1 if name == "head" else self.prompt_columns

        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if self.over:
                return
            widths.append(output.shape[1])
            # The prompt's pass: only its last columns are kept (a copy, not a view
            # that would keep the whole prompt's outputs alive).
            part = output[:, -columns:].detach().clone() if len(parts) == 0 \
                else output.detach()
            self.bytes += part.numel() * part.element_size()
            if self.bytes > self.limit:
                self.over = True
                for kept in self.parts.values():
                    kept.clear()
                return
            parts.append(part)
        return keep

    def kept(self, width: int, passes: int) -> dict[str, torch.Tensor]:
        """Per module, its kept columns in one tensor, when the generation's passes were
        one over the whole prompt (``width`` columns) then ``passes - 1`` of one column
        each; else (or over the limit) nothing."""
        if self.over:
            return {}
        for name, widths in self.widths.items():
            if len(widths) != passes or widths[0] != width and not (
                    name == "head" and widths[0] == 1) or any(w != 1 for w in widths[1:]):
                return {}
        return {name: torch.cat(parts, dim=1) for name, parts in self.parts.items()}
