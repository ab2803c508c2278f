"""Labelled answers with the scoring pass's features, and the feature sets a learned score
is fitted on.

A features folder holds one ``<set>.npz`` per labelled set (``sciq-calibration``,
``truthfulqa-evaluation``, ``rag-calibration``, ...), written by ``semgrad-bench features``:

- ``features`` ``[answers, features]`` float64 and ``names`` ``[features]``: the pass's named
  features (``UncertaintyScore.features``: ``grad_l1/<offset>/<layer>`` and
  ``grad_l2/<offset>/<layer>`` vector norms of the anchor gradient, ``semgrad``,
  ``semgrad_sum``, ``objective_mean``, ``objective_sum``, ``nll``, ``nll_per_token``,
  ``mean_entropy``, ``max_entropy``, ``max_token_nll``, ``max_prob``, ``answer_tokens``);
- ``correct`` ``[answers]`` bool (the judge's verdict) and ``index`` (the question's line);
- ``population`` ``[answers]`` str: the source population of each answer (the RAG-style
  set mixes SciQ-derived and TruthfulQA-derived questions; every AUROC is the mean of the
  AUROCs within populations);
- optionally ``score_names`` and ``scores`` ``[answers, rows]``: scores stored by an earlier
  benchmark run of the same answers (P(True), sampling baselines, HybridGrad).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from semgrad_guard.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

#: Anchor offsets and layers whose gradient norms the feature sets use.
OFFSETS = (-1, -2, -3, -4, -5, -6)
GRADIENT_LAYERS = tuple(range(15, 30))
#: The anchor the shipped SemGrad profile of the default model chose, and the documented
#: default anchor, for the fixed SemGrad rows.
PROFILE_ANCHOR = -1
DEFAULT_ANCHOR = -4

#: Likelihood statistics: the four of the benchmark's regression control, and all seven.
LIKELIHOOD_CONTROL = ("nll", "nll_per_token", "mean_entropy", "max_prob")
LIKELIHOOD = ("nll", "nll_per_token", "mean_entropy", "max_entropy", "max_token_nll",
              "max_prob", "answer_tokens")
#: Gradient summaries: SemGrad at the profile's and the default anchor, the summed
#: objective's SemGrad, both objectives, and the mean over layers of the L2 norm at every
#: offset.
GRADIENT_SUMMARY = ("semgrad", f"grad_l1_mean/{DEFAULT_ANCHOR}", "semgrad_sum",
                    "objective_mean", "objective_sum",
                    *(f"grad_l2_mean/{k}" for k in OFFSETS))
GRADIENT_PER_LAYER = tuple(f"grad_{n}/{k}/{layer}" for n in ("l1", "l2") for k in OFFSETS
                           for layer in GRADIENT_LAYERS)

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "nll_per_token": ("nll_per_token",),
    "likelihood_control": LIKELIHOOD_CONTROL,
    "likelihood": LIKELIHOOD,
    "likelihood+grad_summary": LIKELIHOOD + GRADIENT_SUMMARY,
    "likelihood+grad_per_layer": LIKELIHOOD + GRADIENT_SUMMARY + GRADIENT_PER_LAYER,
}


@dataclass
class LabelledSet:
    """The labelled answers of one set with their features."""

    name: str
    features: FloatArray
    names: list[str]
    correct: npt.NDArray[np.bool_]
    index: npt.NDArray[np.int64]
    population: npt.NDArray[np.str_]
    stored: dict[str, FloatArray]

    def __len__(self) -> int:
        return len(self.correct)

    @property
    def wrong(self) -> npt.NDArray[np.int64]:
        return (~self.correct).astype(np.int64)

    def raw(self, name: str) -> FloatArray:
        try:
            return self.features[:, self.names.index(name)]
        except ValueError:
            raise ConfigError(f"{self.name}: no feature {name!r} in the features file") from None

    def rows(self) -> list[dict[str, float]]:
        """Every answer's features as the scorer gives them (``UncertaintyScore.features``)."""
        return [dict(zip(self.names, map(float, row), strict=True)) for row in self.features]

    def semgrad(self, offset: int, layers: tuple[int, ...], norm: str = "l1",
                normalisation: str = "mean") -> FloatArray:
        """One SemGrad configuration: the mean over ``layers`` of the anchor gradient's
        norm at ``offset``, of the mean-normalised objective or (``"sum"``) the summed one
        (``answer_tokens`` times the gradient)."""
        v = np.mean([self.raw(f"grad_{norm}/{offset}/{layer}") for layer in layers], axis=0)
        return v * self.raw("answer_tokens") if normalisation == "sum" else v


def load_set(folder: str | os.PathLike[str], name: str) -> LabelledSet:
    path = Path(folder) / f"{name}.npz"
    if not path.is_file():
        raise ConfigError(f"no features file {path} (write it with 'semgrad-bench features')")
    z = np.load(path, allow_pickle=False)
    stored = {}
    if "score_names" in z.files:
        stored = {str(n): z["scores"][:, i].astype(np.float64)
                  for i, n in enumerate(z["score_names"])}
    features = z["features"].astype(np.float64)
    if not np.isfinite(features).all():
        raise ConfigError(f"{path}: non-finite features")
    return LabelledSet(name, features, [str(n) for n in z["names"]], z["correct"].astype(bool),
                       z["index"].astype(np.int64), z["population"].astype(str), stored)


def save_set(folder: str | os.PathLike[str], labelled: LabelledSet) -> Path:
    path = Path(folder) / f"{labelled.name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "features": labelled.features, "names": np.array(labelled.names),
        "correct": labelled.correct, "index": labelled.index, "population": labelled.population}
    if labelled.stored:
        arrays["score_names"] = np.array(list(labelled.stored))
        arrays["scores"] = np.column_stack(list(labelled.stored.values()))
    np.savez_compressed(path, **arrays)
    return path

