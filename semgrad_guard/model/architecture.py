"""The one place that knows where a model family keeps its decoder blocks.

Hidden states are numbered as Hugging Face numbers ``hidden_states``: ``0`` is the
embedding output and ``l`` (``1 <= l <= L``) is the output of decoder block ``l - 1``.
The final-norm output that Hugging Face appends last is never an anchor candidate, so
the layers SemGrad may use are ``0 .. L - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import GradientAccessError

# Attribute paths of the decoder-block list, most common first.
_BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen, Gemma, Phi-3, SmolLM
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
)


@dataclass(frozen=True)
class ModelLayout:
    """Where the pieces SemGrad touches live inside one causal LM."""

    blocks: nn.ModuleList
    embedding: nn.Module
    lm_head: nn.Module
    vocab_rows: int
    context_window: int | None

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks ``L``."""
        return len(self.blocks)

    def upper_half(self) -> tuple[int, ...]:
        """The reference layer set ``{L - floor(L/2), ..., L - 1}``."""
        n = self.num_layers
        return tuple(range(n - n // 2, n))

    def module_producing(self, layer: int) -> nn.Module:
        """The module whose output is hidden state ``layer``."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(
                f"layer {layer} is not an anchor candidate: use 0..{self.num_layers - 1} "
                "(Hugging Face hidden_states numbering, final-norm output excluded)"
            )
        return self.embedding if layer == 0 else self.blocks[layer - 1]

    def linear_layers(self, layer: int) -> dict[str, nn.Linear]:
        """Every linear layer of the blocks from hidden state ``layer`` up (the blocks a
        pass starting from that state runs), named ``"<block>.<path>"``, and the output
        head as ``"head"`` when it is one."""
        self.module_producing(layer)  # raises on a layer out of range
        found = {f"{i}.{name}": module
                 for i in range(layer, self.num_layers)
                 for name, module in self.blocks[i].named_modules()
                 if isinstance(module, nn.Linear)}
        if isinstance(self.lm_head, nn.Linear):
            found["head"] = self.lm_head
        return found


def _lookup(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def model_layout(model: object) -> ModelLayout:
    """Find the decoder blocks, embedding and output head of ``model``.

    Raises :class:`GradientAccessError` when ``model`` is not a torch module with a
    recognisable stack of decoder blocks (a remote model, a compiled graph, an
    inference-only runtime).
    """
    if not isinstance(model, nn.Module):
        raise GradientAccessError(
            f"model without gradient access: {type(model).__name__} is not a torch "
            "module; SemGrad needs a local Hugging Face causal LM"
        )
    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    blocks = None
    for path in _BLOCK_PATHS:
        found = _lookup(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            blocks = found
            break
    if blocks is None and n_layers:
        # Unknown family: the module list as long as the configured depth.
        for module in model.modules():
            if isinstance(module, nn.ModuleList) and len(module) == n_layers:
                blocks = module
                break
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    embedding = get_in() if callable(get_in) else None
    lm_head = get_out() if callable(get_out) else None
    if blocks is None or embedding is None or lm_head is None:
        missing = [
            name
            for name, part in (("decoder blocks", blocks), ("input embedding", embedding),
                               ("output head", lm_head))
            if part is None
        ]
        raise GradientAccessError(
            f"model without gradient access: cannot find the {', '.join(missing)} of "
            f"{type(model).__name__}"
        )
    weight = getattr(embedding, "weight", None)
    vocab_rows = int(weight.shape[0]) if weight is not None else int(getattr(config, "vocab_size", 0))
    window = (
        getattr(config, "max_position_embeddings", None)
        or getattr(config, "n_positions", None)
        or getattr(config, "max_sequence_length", None)
    )
    return ModelLayout(blocks, embedding, lm_head, vocab_rows, int(window) if window else None)
