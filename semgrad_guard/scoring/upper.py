"""The scoring pass from the lowest anchor layer up, on the hidden state generation kept.

The backward pass never goes below the lowest anchor layer, so the blocks below it only
feed that layer's hidden state to the pass. Generation has just computed that state for
every column the pass runs (the prompt's last columns, then each token it fed back):
when it was kept (:meth:`LocalModel.keep_hidden_state`), the pass takes it and runs only
the blocks above, with generation's keys and values for the columns before. It is the
same computation on the same inputs; what differs is float32 rounding, since generation
computed the answer's columns one at a time (about 1e-9 relative on the hidden state,
within the pass's own rounding on every score: ``benchmarks/feature_cost.py``).

Generation also keeps the outputs of the linear layers of those blocks and the output
head's logits (:mod:`semgrad_guard.model.kept_outputs`): :func:`given_outputs` has the
pass take them instead of computing them again. The backward pass needs of a linear
layer only its weight, so what the pass still computes forward is what lies between the
linear layers: norms, rotary embeddings, attention and activations.

The loop below is the decoder loop of the model families listed in :data:`FAMILIES`
(their ``forward`` in transformers 5), checked against each family's own forward by
``tests/core/test_upper_pass.py``; other families run the whole pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .head import over_live

#: Model types whose decoder loop :func:`upper_forward` reproduces.
FAMILIES = frozenset({"llama", "qwen2", "qwen3"})


def runs_upper_pass(model: Any) -> bool:
    """Whether :func:`upper_forward` can run ``model`` (a Hugging Face causal LM) from a
    hidden state up: a listed family, every layer with full attention."""
    config = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if getattr(config, "model_type", None) not in FAMILIES or inner is None \
            or not all(hasattr(inner, part) for part in ("layers", "norm", "rotary_emb")):
        return False
    types = getattr(config, "layer_types", None) or ()
    return all(kind == "full_attention" for kind in types)


def upper_forward(model: Any, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor,
                  positions: torch.Tensor, past: Any, keep: int) -> torch.Tensor:
    """The logits of the last ``keep`` columns of a pass that starts from ``hidden``,
    hidden state ``layer`` (the input of block ``layer``) of the columns run, with
    ``past`` holding every layer's keys and values of the columns before.
    ``attention_mask`` covers the past and the columns run, as in the model's forward."""
    from transformers.masking_utils import create_causal_mask

    inner = model.model
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden,
                              attention_mask=attention_mask, past_key_values=past,
                              position_ids=positions)
    rotary = inner.rotary_emb(hidden, position_ids=positions)
    h = hidden
    for block in inner.layers[layer:model.config.num_hidden_layers]:
        out = block(h, attention_mask=mask, position_embeddings=rotary, position_ids=positions,
                    past_key_values=past, use_cache=True)
        h = out[0] if isinstance(out, tuple) else out
    return model.lm_head(inner.norm(h[:, -keep:]))  # type: ignore[no-any-return]


class _Given(torch.autograd.Function):
    """A linear layer's output, given instead of computed; the gradient at its input is
    the gradient at its output times its weight (no parameter takes a gradient), formed
    only over the ``live`` columns (elsewhere it is zero: padding)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, output: torch.Tensor,  # type: ignore[override]
                weight: torch.Tensor, live: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.live = live
        return output.view_as(output)

    @staticmethod
    def backward(ctx: Any, at_output: torch.Tensor  # type: ignore[override]
                 ) -> tuple[torch.Tensor, None, None, None]:
        (weight,) = ctx.saved_tensors
        return over_live(at_output, ctx.live, weight.shape[1], lambda rows: rows @ weight), \
            None, None, None


def given_outputs(layers: dict[str, nn.Linear], outputs: dict[str, torch.Tensor],
                  live: torch.Tensor | None = None
                  ) -> list[tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]]:
    """For each named linear layer of ``layers`` whose output over the pass's columns is
    in ``outputs``, a ``forward`` that returns it (for
    :meth:`~semgrad_guard.LocalModel.forward_hooks`). ``live`` (``[batch, columns]``)
    marks the columns whose gradient can be non-zero (not right-padding); the head's
    backward is not taken through its forward (:mod:`semgrad_guard.scoring.head`)."""
    padded = None if live is None or bool(live.all()) else live

    def given(name: str, module: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
        output = outputs[name]
        mask = None if name == "head" else padded

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.shape[:-1] != output.shape[:-1]:
                raise RuntimeError(f"linear layer {name} was given {tuple(output.shape)} "
                                   f"for an input of {tuple(x.shape)}")
            return _Given.apply(x, output, module.weight, mask)  # type: ignore[no-any-return]
        return forward

    return [(module, given(name, module)) for name, module in layers.items() if name in outputs]
