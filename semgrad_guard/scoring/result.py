"""The one result type of every score semgrad-guard computes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Every score the shared forward/backward pass produces. Higher = more uncertain.
SCORE_NAMES = ("semgrad", "hybridgrad", "nll", "nll_per_token", "mean_entropy", "max_prob")

ScoreName = Literal["semgrad", "hybridgrad", "nll", "nll_per_token", "mean_entropy", "max_prob"]


@dataclass(frozen=True)
class UncertaintyScore:
    """The uncertainty of one answer. **Higher means more uncertain**, for every score.

    ``value`` is the score named by ``method``; ``scores`` holds all of them:

    - ``semgrad``: mean |dJ/dh| at the anchor token over the anchor layers (method.md);
    - ``hybridgrad``: ``alpha * pg + (1 - alpha) * semgrad``;
    - ``nll``: sequence negative log-likelihood, ``-sum_t log p(y_t)``;
    - ``nll_per_token``: the same divided by the number of response tokens;
    - ``mean_entropy``: mean over steps of the next-token entropy;
    - ``max_prob``: ``1 - mean_t max_v p_t(v)``, one minus the mean top-token probability.

    ``components`` holds HybridGrad's parts (``semgrad``, ``pg``, ``mean_entropy``,
    ``alpha``). ``anchor_offset`` counts back from the end of the prompt (-1 is the
    last prompt token); ``layers`` use Hugging Face ``hidden_states`` numbering (0 is
    the embedding output). ``anchor_source`` says whether a calibrated model profile
    chose the anchor or the documented default did. ``retokenized`` is true when the
    response ids were rebuilt from text rather than taken from generation.
    """

    method: str
    value: float
    scores: dict[str, float]
    components: dict[str, float]
    anchor_offset: int
    anchor_token: str
    layers: tuple[int, ...]
    anchor_source: Literal["profile", "default", "explicit"]
    profile_id: str | None
    model: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    retokenized: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    direction: Literal["higher_is_more_uncertain"] = "higher_is_more_uncertain"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["prompt_ids"] = list(self.prompt_ids)
        d["response_ids"] = list(self.response_ids)
        return d

    def with_method(self, method: str) -> UncertaintyScore:
        """The same measurement, headlined by another of its scores."""
        if method not in self.scores:
            raise KeyError(f"unknown score {method!r}; known: {', '.join(self.scores)}")
        return UncertaintyScore(**{**self.__dict__, "method": method, "value": self.scores[method]})
