"""The learned probability of error: a logistic model over the features of the one
scoring pass, calibrated to ``P(wrong)``, with a robust fallback for answers far from the
data it was fitted on.

Applying it needs numpy only; fitting it (scikit-learn) is calibration's job
(:func:`semgrad_guard.calibration.learned.fit_learned_score`). A model profile carries it
(``ModelProfile.learned``), and a scorer built with that profile adds ``"learned"`` to
every answer's scores.

Feature names are the pass's own (``UncertaintyScore.features``) plus two summaries
derived from them:

- ``grad_l2_mean/<offset>``: the mean over the anchor layers of ``grad_l2/<offset>/<layer>``;
- ``grad_l1_mean/<offset>``: the mean over the anchor layers of ``grad_l1/<offset>/<layer>``,
  which is ``hidden size x`` SemGrad with the anchor at ``<offset>``. A learned score reads
  SemGrad at the default anchor this way (``grad_l1_mean/-4`` for a ChatML header): the
  constant factor is a constant shift after the log transform, which standardisation
  removes.

Heavy-tailed features (gradient norms, objectives, NLLs, lengths) enter as logarithms.

>>> score = LearnedScore.from_dict({
...     "features": ["nll_per_token"], "transforms": ["identity"], "mean": [1.0],
...     "std": [0.5], "coef": [2.0], "intercept": 0.0, "C": 1.0,
...     "platt": {"coef": 1.0, "intercept": 0.0},
...     "fallback": {"feature": "nll_per_token", "coef": 1.0, "intercept": -1.0},
...     "detector": {"precision": [[1.0]], "threshold": 3.0, "quantile": 0.99}})
>>> estimate = score.estimate({"nll_per_token": 1.0})
>>> round(estimate.probability, 3), estimate.out_of_domain
(0.5, False)
>>> far = score.estimate({"nll_per_token": 9.0})
>>> far.out_of_domain, far.probability == far.fallback_probability
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, ScoringError

#: Likelihood statistics of the pass that the shipped feature set uses.
LIKELIHOOD_FEATURES = ("nll", "nll_per_token", "mean_entropy", "max_entropy", "max_token_nll",
                       "max_prob", "answer_tokens")
#: Features entered as logarithms (by prefix); ``nll_per_token`` stays as it is.
_LOGGED_PREFIXES = ("grad_", "semgrad", "objective", "nll", "answer_tokens", "max_token_nll")
_LOG_FLOOR = 1e-12
#: The score the fallback reads when a learned score is given no other.
FALLBACK_FEATURE = "nll_per_token"


def gradient_summary_features(offsets: Sequence[int], default_offset: int) -> tuple[str, ...]:
    """The gradient summaries of the shipped feature set: SemGrad at the profile's anchor
    (``semgrad``) and at the default anchor (``grad_l1_mean/<default_offset>``), SemGrad of
    the summed objective, both objectives, and the layer-mean L2 norm at every offset."""
    return ("semgrad", f"grad_l1_mean/{default_offset}", "semgrad_sum", "objective_mean",
            "objective_sum", *(f"grad_l2_mean/{k}" for k in offsets))


def default_transform(name: str) -> Literal["log", "identity"]:
    """``log`` for the heavy-tailed features, ``identity`` for the rest."""
    return "log" if name.startswith(_LOGGED_PREFIXES) and name != "nll_per_token" else "identity"


def feature_value(features: Mapping[str, float], name: str) -> float:
    """One named feature of an answer, derived summaries included (see the module doc).

    >>> feature_value({"grad_l2/-1/3": 1.0, "grad_l2/-1/4": 3.0}, "grad_l2_mean/-1")
    2.0
    """
    if name in features:
        return float(features[name])
    norm, sep, offset = name.partition("_mean/")
    if sep and norm in ("grad_l1", "grad_l2"):
        prefix = f"{norm}/{offset}/"
        values = [float(v) for key, v in features.items() if key.startswith(prefix)]
        if values:
            return float(np.mean(values))
    raise ScoringError(f"the learned score needs feature {name!r}, which this score does not "
                       f"carry (was it computed with the profile's anchor and offsets?)")


def _has_feature(features: Mapping[str, float], name: str) -> bool:
    try:
        feature_value(features, name)
    except ScoringError:
        return False
    return True


def feature_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str],
                   transforms: Sequence[str]) -> np.ndarray:
    """The transformed features of many answers, one row each."""
    x = np.array([[feature_value(row, n) for n in names] for row in rows], dtype=np.float64)
    x = x.reshape(len(rows), len(names))
    for j, transform in enumerate(transforms):
        if transform == "log":
            x[:, j] = np.log(np.maximum(x[:, j], _LOG_FLOOR))
    return x


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z))) if z >= 0 else float(np.exp(z) / (1.0 + np.exp(z)))


@dataclass(frozen=True)
class Platt:
    """``p = sigmoid(coef * x + intercept)``."""

    coef: float
    intercept: float

    def __call__(self, x: float) -> float:
        return _sigmoid(self.coef * x + self.intercept)


@dataclass(frozen=True)
class Fallback(Platt):
    """The robust score used out of domain: one feature (per-token NLL), Platt-calibrated."""

    feature: str = FALLBACK_FEATURE


@dataclass(frozen=True)
class OutOfDomainDetector:
    """Mahalanobis distance of the standardised features from the calibration data
    (``precision`` is the inverse of their shrunk covariance); an answer is out of domain
    when its distance exceeds ``threshold``, the ``quantile`` of the calibration answers'
    own (out-of-fold) distances."""

    precision: tuple[tuple[float, ...], ...]
    threshold: float
    quantile: float
    location: tuple[float, ...] = ()

    def distance(self, z: np.ndarray) -> float:
        d = z - (np.asarray(self.location) if self.location else 0.0)
        return float(np.sqrt(max(0.0, float(d @ np.asarray(self.precision) @ d))))


@dataclass(frozen=True)
class ErrorEstimate:
    """A learned score's reading of one answer.

    ``probability`` is what policies act on: the model's probability of error, or the
    fallback's when the answer is out of domain (``out_of_domain``) or the profile found
    the fallback the better score (``source == "fallback"``).
    """

    probability: float
    model_probability: float
    fallback_probability: float
    distance: float
    out_of_domain: bool
    source: Literal["model", "fallback"]
    #: Features the model needs that the answer's pass did not give (a prompt shorter
    #: than the offsets the model reads): then the model is not applied at all, the
    #: fallback answers, and ``model_probability`` and ``distance`` are NaN.
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class LearnedScore:
    """A fitted probability of error (see the module doc for the features).

    ``p_model = platt(coef . (x - mean) / std + intercept)``; ``primary`` says which score
    the fit found better by its worst calibration domain (``"model"`` or
    ``"fallback"``). The rest records how it was fitted: the regularisation ``C``
    (chosen by cross-validation), the calibration ``domains``, ``n`` labelled answers,
    the ``judge``, a ``data_fingerprint`` and the cross-validated AUROC of each candidate
    per domain (``cv_auroc``).
    """

    features: tuple[str, ...]
    transforms: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    C: float
    platt: Platt
    fallback: Fallback
    detector: OutOfDomainDetector
    primary: Literal["model", "fallback"] = "model"
    domains: tuple[str, ...] = ()
    n: int = 0
    n_wrong: int = 0
    judge: str = ""
    data_fingerprint: str = ""
    balanced_weights: bool = True
    cv_auroc: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.features)
        for name in ("transforms", "mean", "std", "coef"):
            if len(getattr(self, name)) != k:
                raise ConfigError(f"learned score: {name} has {len(getattr(self, name))} "
                                  f"entries for {k} features")
        if any(t not in ("log", "identity") for t in self.transforms):
            raise ConfigError(f"learned score: transforms must be 'log' or 'identity', got "
                              f"{sorted(set(self.transforms))}")
        if len(self.detector.precision) != k:
            raise ConfigError(f"learned score: the detector's precision matrix is not "
                              f"{k} x {k}")
        if self.primary not in ("model", "fallback"):
            raise ConfigError(f"learned score: primary must be 'model' or 'fallback', got "
                              f"{self.primary!r}")

    def standardised(self, features: Mapping[str, float]) -> np.ndarray:
        x = feature_matrix([features], self.features, self.transforms)[0]
        return (x - np.asarray(self.mean)) / np.asarray(self.std)

    def estimate(self, features: Mapping[str, float]) -> ErrorEstimate:
        """The probability of error of one answer from its features, and whether it is
        out of domain (then the fallback's probability is the answer's)."""
        p_fallback = self.fallback(feature_value(features, self.fallback.feature))
        missing = tuple(name for name in self.features if not _has_feature(features, name))
        if missing:
            return ErrorEstimate(probability=p_fallback, model_probability=math.nan,
                                 fallback_probability=p_fallback, distance=math.nan,
                                 out_of_domain=True, source="fallback", missing=missing)
        z = self.standardised(features)
        p_model = self.platt(float(z @ np.asarray(self.coef)) + self.intercept)
        distance = self.detector.distance(z)
        out = bool(distance > self.detector.threshold)
        source: Literal["model", "fallback"] = "fallback" if out else self.primary
        return ErrorEstimate(probability=p_fallback if source == "fallback" else p_model,
                             model_probability=p_model, fallback_probability=p_fallback,
                             distance=distance, out_of_domain=out, source=source)

    def error_probability(self, features: Mapping[str, float]) -> float:
        """The probability that the answer with these features is wrong."""
        return self.estimate(features).probability

    def decision(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The model's log-odds before calibration, for many answers (for reports)."""
        x = feature_matrix(rows, self.features, self.transforms)
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return np.asarray(z @ np.asarray(self.coef) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["detector"]["precision"] = [list(row) for row in self.detector.precision]
        for key in ("features", "transforms", "mean", "std", "coef", "domains"):
            d[key] = list(d[key])
        d["detector"]["location"] = list(self.detector.location)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedScore:
        """Read :meth:`to_dict`'s output back; a bad field is a ``ConfigError``."""
        try:
            d = dict(data)
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(d) - known)
            if unknown:
                raise ConfigError(f"learned score: unknown keys {unknown}")
            detector = dict(d.pop("detector"))
            detector["precision"] = tuple(tuple(float(v) for v in row)
                                          for row in detector["precision"])
            detector["location"] = tuple(float(v) for v in detector.get("location", ()))
            return cls(
                features=tuple(str(n) for n in d.pop("features")),
                transforms=tuple(str(t) for t in d.pop("transforms")),
                mean=tuple(float(v) for v in d.pop("mean")),
                std=tuple(float(v) for v in d.pop("std")),
                coef=tuple(float(v) for v in d.pop("coef")),
                platt=Platt(**d.pop("platt")), fallback=Fallback(**d.pop("fallback")),
                detector=OutOfDomainDetector(**detector),
                domains=tuple(d.pop("domains", ())), **d)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"learned score: not a valid fit ({type(exc).__name__}: "
                              f"{exc})") from exc
