"""The scoring pass from the lowest anchor layer up, on the hidden state generation kept.

The backward pass never goes below the lowest anchor layer, so the blocks below it only
feed that layer's hidden state to the pass. Generation has just computed that state for
every column the pass runs (the prompt's last columns, then each token it fed back):
when it was kept (:meth:`LocalModel.keep_hidden_state`), the pass takes it and runs only
the blocks above, with generation's keys and values for the columns before. It is the
same computation on the same inputs; what differs is float32 rounding, since generation
computed the answer's columns one at a time (about 1e-9 relative on the hidden state,
within the pass's own rounding on every score: ``benchmarks/feature_cost.py``).

The loop below is the decoder loop of the model families listed in :data:`FAMILIES`
(their ``forward`` in transformers 5), checked against each family's own forward by
``tests/core/test_upper_pass.py``; other families run the whole pass.
"""

from __future__ import annotations

from typing import Any

import torch

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
