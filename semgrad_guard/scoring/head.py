"""The output head's step of the backward pass, summed over the vocabulary in blocks.

Both scoring passes differentiate ``J`` from the logits ``z = W h`` back to the hidden
states, and the output head's step, ``dJ/dh = (dJ/dz) W``, sums over the whole
vocabulary. In float32 that sum is ill-conditioned: the head's rows share a large common
vector (on the default model the mean row has norm 2.2 against 3.2 per row), which the
gradient's weights ``dJ/dz_v`` (proportional to ``p_v - [v = y]``, summing to zero)
cancel. How far it rounds then depends on the kernel: on CPU a product with one to three
rows (an answer of up to three tokens scored alone, or each step of the fused path's
decode) takes a matrix-vector kernel that rounds it to about 1e-4 relative, where the
matrix kernel of four rows or more stays near 1e-6. Summed a block of vocabulary rows at
a time, it stays near 1e-6 for any number of rows, at the cost of one product
(``benchmarks/float32_floor.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Vocabulary rows per block of the head's input gradient.
VOCAB_BLOCK = 1024


def head_input_gradient(at_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``at_output @ weight`` (``[..., vocabulary] @ [vocabulary, dim]``), the gradient at a
    linear head's input, summed over the vocabulary a block of rows at a time."""
    rows = at_output.reshape(-1, at_output.shape[-1])
    # Accumulated in place, a block at a time: memory stays one product's, whatever the
    # vocabulary.
    total = rows.new_zeros((rows.shape[0], weight.shape[1]),
                           dtype=torch.promote_types(rows.dtype, torch.float32))
    for lo in range(0, rows.shape[1], VOCAB_BLOCK):
        total += rows[:, lo:lo + VOCAB_BLOCK] @ weight[lo:lo + VOCAB_BLOCK]
    return total.to(at_output.dtype).reshape(*at_output.shape[:-1], weight.shape[1])


def over_live(at: torch.Tensor, live: torch.Tensor | None, width: int,
              product: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``product`` of the rows of ``at`` (``[batch, columns, ...]``) that ``live``
    (``[batch, columns]``) marks, zero (of ``width``) elsewhere; of every row when
    ``live`` is None or marks them all."""
    if live is None or bool(live.all()):
        return product(at)
    out = at.new_zeros((*at.shape[:2], width))
    out[live] = product(at[live])
    return out


def backward_through_head(objective: torch.Tensor, head: nn.Module,
                          outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
                          wanted: Sequence[torch.Tensor], live: torch.Tensor | None = None
                          ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The gradient of ``objective`` at the ``outputs`` of the output ``head`` (the logits
    of each call) and at the ``wanted`` hidden states below it, ``inputs`` being the
    head's input of each call.

    The backward runs in two stages, and between them the input gradient of every call
    (``[batch, columns, ...]`` each: the pass's one call, or each decode step's) is one
    :func:`head_input_gradient`, which reads the head's weight once. A head that is not a
    linear layer is left to autograd. ``live`` (``[batch, columns]`` over the calls'
    columns) marks the columns ``objective`` depends on: the product skips the others,
    whose gradient is zero.
    """
    at_outputs = torch.autograd.grad(objective, outputs)
    if not isinstance(head, nn.Linear):
        return at_outputs, torch.autograd.grad(outputs, wanted, at_outputs)
    with torch.no_grad():
        weight = head.weight
        at_input = over_live(torch.cat(at_outputs, 1), live, weight.shape[1],
                             lambda rows: head_input_gradient(rows, weight))
        at_inputs = at_input.split([g.shape[1] for g in at_outputs], 1)
    return at_outputs, torch.autograd.grad(inputs, wanted, at_inputs)
