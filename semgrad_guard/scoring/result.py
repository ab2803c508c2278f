"""The one result type of every score semgrad-guard computes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

# Imported at run time, not only for type checkers: pydantic models that hold a score
# (the LangChain handler's ScoredGeneration) resolve these annotations.
import torch

#: Every score the shared forward/backward pass produces. Higher = more uncertain.
#: ``learned`` needs a model profile fitted on labelled answers.
SCORE_NAMES = ("semgrad", "hybridgrad", "nll", "nll_per_token", "mean_entropy", "max_prob",
               "learned")

ScoreName = Literal["semgrad", "hybridgrad", "nll", "nll_per_token", "mean_entropy", "max_prob",
                    "learned"]
#: What a policy rule may read: a score, or ``auto``.
PolicyScoreName = Literal["semgrad", "hybridgrad", "nll", "nll_per_token", "mean_entropy",
                          "max_prob", "learned", "auto"]
#: Scores that are already a probability of error (a policy's ``max_error_probability``
#: reads them as they are).
PROBABILITY_SCORES = ("learned",)
#: What a policy may name: a score, or ``auto`` (the best score the model profile measured).
AUTO_SCORE = "auto"


def resolve_score_name(requested: str, available: Mapping[str, float]) -> str:
    """The score a rule reads: ``requested``, or for ``auto`` the best score the model
    profile measured (today the learned probability of error, which only a profile
    fitted on labelled answers provides).

    >>> resolve_score_name("auto", {"nll": 1.0, "learned": 0.2})
    'learned'
    """
    if requested != AUTO_SCORE:
        return requested
    if "learned" in available:
        return "learned"
    raise KeyError("score 'auto' reads the learned probability of error, which needs a model "
                   "profile fitted on labelled answers (semgrad-guard calibrate --labelled)")

#: What each score measures, in a reader's words (the review page shows these).
SCORE_MEANINGS: dict[str, str] = {
    "semgrad": "how strongly the likelihood of the answer reacts to a small change of the "
               "model's hidden state at one prompt token (a gradient norm); a model sure "
               "of its answer barely reacts",
    "hybridgrad": "SemGrad mixed with the gradient at the output layer, weighted by the "
                  "entropy of the model's word choices",
    "nll": "how improbable the model found its own answer (negative log-likelihood of all "
           "its tokens; longer answers score higher)",
    "nll_per_token": "how improbable the model found its own answer, per token",
    "mean_entropy": "how spread the model's choice of each next word was, on average",
    "max_prob": "one minus the mean probability of the word the model chose at each step",
}


@dataclass(frozen=True)
class HiddenStates:
    """Every layer's hidden state of one answer's pass, for a probe.

    ``anchor[l]`` and ``last[l]`` are ``hidden_states[l]`` (Hugging Face numbering: 0 is
    the embedding output, the last is the final-norm output) at the anchor token and at
    the last position the pass runs: the answer's last fed token ``y_{T-1}``, whose state
    predicted the answer's final token (the last prompt token when ``T = 1``).
    Both are float32 tensors of shape ``[layers + 1, hidden size]`` on the CPU.
    """

    anchor: torch.Tensor
    last: torch.Tensor

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {"anchor": self.anchor.tolist(), "last": self.last.tolist()}


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
    ``alpha``). ``features`` holds every named statistic of the pass (higher = more
    uncertain for each): the scores above, ``semgrad_sum`` (SemGrad of the summed
    objective, ``answer_tokens * semgrad``), ``objective_mean`` and ``objective_sum``,
    ``max_entropy``, ``max_token_nll`` (``-min_t log p(y_t)``), ``answer_tokens``, and
    the anchor gradient's norms ``grad_l1/<offset>/<layer>`` and ``grad_l2/<offset>/<layer>``
    of the mean objective at every eligible offset and anchor layer. ``hidden_states``
    (when the scorer was asked for them) holds every layer's hidden state at the anchor
    and the last position; ``to_dict()`` leaves it out unless asked. ``anchor_offset`` counts back from the end of the prompt (-1 is the
    last prompt token); ``layers`` use Hugging Face ``hidden_states`` numbering (0 is
    the embedding output). ``anchor_source`` says whether a calibrated model profile
    chose the anchor or the documented default did. ``retokenized`` is true when the
    response ids were rebuilt from text rather than taken from generation.

    With a model profile fitted on labelled answers, ``scores["learned"]`` is the learned
    probability that the answer is wrong (between 0 and 1), and ``components`` adds its
    parts (``learned_model``, ``learned_fallback``, ``learned_distance``).
    ``out_of_domain`` is true when the answer's features lay far from the profile's
    calibration data, so ``learned`` is the robust fallback's probability (per-token NLL,
    calibrated) rather than the learned model's.
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
    out_of_domain: bool = False
    features: dict[str, float] = field(default_factory=dict)
    hidden_states: HiddenStates | None = field(default=None, repr=False, compare=False)

    def to_dict(self, hidden_states: bool = False) -> dict[str, Any]:
        """Plain data; the (large) hidden states only when ``hidden_states`` is true."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("scores", "components", "timings", "features"):
            d[name] = dict(d[name])
        d["layers"] = list(self.layers)
        d["prompt_ids"] = list(self.prompt_ids)
        d["response_ids"] = list(self.response_ids)
        probe = d.pop("hidden_states")
        if hidden_states:
            d["hidden_states"] = None if probe is None else probe.to_dict()
        return d

    def with_method(self, method: str) -> UncertaintyScore:
        """The same measurement, headlined by another of its scores."""
        if method not in self.scores:
            raise KeyError(f"unknown score {method!r}; known: {', '.join(self.scores)}")
        return UncertaintyScore(**{**self.__dict__, "method": method, "value": self.scores[method]})
