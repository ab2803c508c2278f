"""What a generation keeps for scoring it: outputs of its modules over the columns the
scoring pass runs.

Scoring a generation runs a teacher-forced pass over columns generation has just
computed, through the blocks from the lowest anchor layer up. Generation keeps the
hidden state at that layer (the output of the block below it: the pass starts there) and
the outputs of the linear layers above it and of the output head. Most of the pass's
forward work is those linear layers, and the backward pass needs of a linear layer only
its weight: kept, their outputs spare the pass every matrix product of its forward. What
the pass still computes is what lies between them (norms, rotary embeddings, attention,
activations).

Each column kept costs one output vector per linear layer per row (on the default model
about 0.5 MB: 15 blocks of 5,184 values and 49,152 logits), so a generation keeps them
only while they fit in a limit (:attr:`LocalModel.kept_outputs_limit`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

import torch
from torch import nn

#: What names a kept module: a hidden-state layer, or a linear layer's name.
Name = TypeVar("Name", bound=Hashable)


class OutputKeeper(Generic[Name]):
    """Forward hooks that keep, during one generation, the output of each module of
    ``modules`` (its first element, for a block that returns a tuple; ``"head"``: the
    output head) over the prompt's last ``prompt_columns`` columns (the head's over its
    last column), then over every column fed back, while all of it stays within
    ``limit`` bytes (None: no limit)."""

    def __init__(self, modules: Mapping[Name, nn.Module], prompt_columns: int,
                 limit: int | None = None) -> None:
        self.modules = modules
        self.prompt_columns = prompt_columns
        self.limit = limit
        self.parts: dict[Name, list[torch.Tensor]] = {name: [] for name in modules}
        self.widths: dict[Name, list[int]] = {name: [] for name in modules}
        self.bytes = 0
        self.over = False

    def hooks(self) -> list[tuple[nn.Module, Any]]:
        return [(module, self._hook(name)) for name, module in self.modules.items()]

    def _hook(self, name: Name) -> Any:
        parts, widths = self.parts[name], self.widths[name]
        columns = 1 if name == "head" else self.prompt_columns

        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if self.over:
                return
            if isinstance(output, tuple):
                output = output[0]
            widths.append(output.shape[1])
            # The prompt's pass: only its last columns are kept (a copy, not a view
            # that would keep the whole prompt's outputs alive).
            part = output[:, -columns:].detach().clone() if len(parts) == 0 \
                else output.detach()
            self.bytes += part.numel() * part.element_size()
            if self.limit is not None and self.bytes > self.limit:
                self.over = True
                for kept in self.parts.values():
                    kept.clear()
                return
            parts.append(part)
        return keep

    def kept(self, width: int, passes: int, rows: int | None = None
             ) -> dict[Name, torch.Tensor]:
        """Per module, its kept columns in one tensor, when the generation's passes were
        one over the whole prompt (``width`` columns) then ``passes - 1`` of one column
        each, over ``rows`` rows (one per answer: beam search runs more); else (or over
        the limit) nothing."""
        if self.over:
            return {}
        for name, widths in self.widths.items():
            if not widths or len(widths) != passes or widths[0] != width and not (
                    name == "head" and widths[0] == 1) or any(w != 1 for w in widths[1:]) \
                    or rows is not None and self.parts[name][0].shape[0] != rows:
                return {}
        return {name: torch.cat(parts, dim=1) for name, parts in self.parts.items()}
