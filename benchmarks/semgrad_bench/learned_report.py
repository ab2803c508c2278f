"""Does the learned probability of error find the wrong answers? One run, evaluation splits.

Everything that is fitted or chosen (the learned scores, their regularisation and
probability maps, the best single SemGrad configuration) uses the calibration splits only;
the evaluation splits are only scored. Every learned score is the library's own fit
(``semgrad_guard.calibration.learned.fit_learned_score``), read as the guard reads it.
For each evaluation set (SciQ, TruthfulQA, the RAG-style set) the report gives every
row's AUROC with a bootstrap 95% interval, paired bootstrap differences between the
learned score and its rivals, the gradient ablation, cross-dataset transfer, the quality
of the probability (ECE, reliability plot), AUROC within answer-length thirds, and ROC
plots. Writes ``report.md``, ``report.json`` and PNGs.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from tqdm.auto import tqdm

from semgrad_guard.calibration.learned import C_GRID, LearnedFit, fit_learned_score
from semgrad_guard.scoring.learned import ErrorEstimate

from .feature_sets import (
    DEFAULT_ANCHOR,
    FEATURE_SETS,
    GRADIENT_LAYERS,
    OFFSETS,
    PROFILE_ANCHOR,
    FloatArray,
    LabelledSet,
    load_set,
)
from .metrics import (
    bootstrap_auroc,
    expected_calibration_error,
    length_thirds,
    paired_difference,
    population_auroc,
    reliability_bins,
)

SETS = ("sciq", "truthfulqa", "rag")
LABELS = {"sciq": "SciQ", "truthfulqa": "TruthfulQA", "rag": "RAG-style"}
#: What ships: the candidate with the best worst-domain leave-one-domain-out AUROC on the
#: calibration splits (likelihood + gradient summary, balanced weights).
SHIPPED = ("likelihood+grad_summary", True)
LIKELIHOOD_ROWS = ("nll", "nll_per_token", "mean_entropy", "max_entropy", "max_token_nll",
                   "max_prob")
LAYER_SETS = {"15-29": GRADIENT_LAYERS, "15-19": tuple(range(15, 20)),
              "20-24": tuple(range(20, 25)), "25-29": tuple(range(25, 30)),
              **{str(layer): (layer,) for layer in GRADIENT_LAYERS}}
STORED_LABELS = {"p_true": "P(True) (stored run)", "hybridgrad": "HybridGrad, profile anchor "
                 "(stored run)", "hybridgrad_default": "HybridGrad, default anchor (stored run)",
                 **{f"{n}_k{k}": f"{label} K={k} (stored run)" for k in (5, 10)
                    for n, label in (("semantic_entropy", "semantic entropy"),
                                     ("lexical_similarity", "lexical similarity"),
                                     ("eigenscore", "EigenScore"))}}

LEARNED = "learned score (shipped: likelihood + gradient summary)"
CONTROL = "likelihood-only regression control (4 features, same recipe)"
CONTROL_IN_DOMAIN = "likelihood-only regression control (4 features, this set's calibration)"
ABLATION = "learned without gradient (7 likelihood features, same recipe)"
PER_LAYER = "learned with per-layer gradients (same recipe)"
FALLBACK = "calibrated per-token NLL (the shipped score's fallback)"
LEARNED_MODEL = "learned score, model only (no out-of-domain fallback)"
SEMGRAD = f"SemGrad (profile anchor {PROFILE_ANCHOR}, layers 15-29)"
SEMGRAD_DEFAULT = f"SemGrad (default anchor {DEFAULT_ANCHOR}, layers 15-29)"


@dataclass(frozen=True)
class Data:
    calibration: dict[str, LabelledSet]
    evaluation: dict[str, LabelledSet]


def load(folder: str | os.PathLike[str]) -> Data:
    return Data({s: load_set(folder, f"{s}-calibration") for s in SETS},
                {s: load_set(folder, f"{s}-evaluation") for s in SETS})


def _pool(sets: Iterable[LabelledSet]) -> tuple[list[LabelledSet], np.ndarray, np.ndarray]:
    sets = list(sets)
    return (sets, np.concatenate([s.wrong for s in sets]),
            np.concatenate([s.population for s in sets]))


@dataclass
class Fitted:
    """A learned score fitted by the library on calibration sets, read on any labelled
    set. ``probability`` is what the guard acts on: the model's probability of error, or
    the fallback's (calibrated per-token NLL) on answers its detector finds out of
    domain; ``model_probability`` never falls back."""

    feature_set: str
    fitted: LearnedFit
    isotonic: IsotonicRegression

    @property
    def C(self) -> float:
        return self.fitted.score.C

    @property
    def cv_scores(self) -> dict[float, float]:
        return self.fitted.C_scores

    def decision(self, s: LabelledSet) -> FloatArray:
        return np.asarray(self.fitted.score.decision(s.rows()), dtype=np.float64)

    def estimates(self, s: LabelledSet) -> list[ErrorEstimate]:
        return [self.fitted.score.estimate(r) for r in s.rows()]

    def probability(self, s: LabelledSet, method: str = "shipped") -> FloatArray:
        if method == "isotonic":
            return np.asarray(self.isotonic.predict(self.decision(s)), dtype=np.float64)
        return np.array([e.probability if method == "shipped" else
                         e.model_probability if method == "model" else
                         e.fallback_probability for e in self.estimates(s)])


def fit(sets: Iterable[LabelledSet], feature_set: str, balanced: bool,
        grid: Sequence[float] = C_GRID, folds: int = 5) -> Fitted:
    """The library's fit (``fit_learned_score``), with the populations as its domains,
    ``C`` chosen from ``grid`` and ``folds`` cross-validation folds."""
    parts = list(sets)
    rows = [r for s in parts for r in s.rows()]
    wrong = [bool(w) for s in parts for w in s.wrong]
    populations = [str(p) for s in parts for p in s.population]
    fitted = fit_learned_score(rows, wrong, populations, features=FEATURE_SETS[feature_set],
                               balanced=balanced, grid=grid, folds=folds)
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
        fitted.out_of_fold, np.asarray(wrong, dtype=np.float64))
    return Fitted(feature_set, fitted, isotonic)


# -- (a) the best single SemGrad configuration, on calibration data only -----------------
@dataclass(frozen=True)
class SemGradConfig:
    offset: int
    layers: str
    norm: str
    normalisation: str

    def __str__(self) -> str:
        return (f"offset {self.offset}, layers {self.layers}, {self.norm.upper()}, "
                f"{self.normalisation}-normalised")

    def scores(self, s: LabelledSet) -> FloatArray:
        return s.semgrad(self.offset, LAYER_SETS[self.layers], self.norm, self.normalisation)


def best_semgrad_config(calibration: dict[str, LabelledSet]) -> tuple[SemGradConfig, dict[str, Any]]:
    """The configuration with the best worst-set AUROC over the calibration splits (ties:
    the best mean)."""
    table = []
    for k, layers, norm, nz in itertools.product(OFFSETS, LAYER_SETS, ("l1", "l2"),
                                                 ("mean", "sum")):
        c = SemGradConfig(k, layers, norm, nz)
        per = {d: population_auroc(c.scores(s), s.correct, s.population)
               for d, s in calibration.items()}
        table.append((min(per.values()), float(np.mean(list(per.values()))), c, per))
    worst, mean, best, per = max(table, key=lambda r: (r[0], r[1]))
    return best, {"config": str(best), **asdict(best), "calibration_auroc": per,
                  "calibration_worst": worst, "candidates": len(table)}


# -- the rows of one evaluation set ------------------------------------------------------
def fixed_rows(s: LabelledSet, best: SemGradConfig) -> dict[str, FloatArray]:
    rows = {name: s.raw(name) for name in LIKELIHOOD_ROWS}
    rows["answer length in tokens"] = s.raw("answer_tokens")
    rows[SEMGRAD] = s.semgrad(PROFILE_ANCHOR, GRADIENT_LAYERS)
    rows[SEMGRAD_DEFAULT] = s.semgrad(DEFAULT_ANCHOR, GRADIENT_LAYERS)
    rows["SemGrad x answer tokens (summed objective)"] = s.semgrad(PROFILE_ANCHOR,
                                                                    GRADIENT_LAYERS, "l1", "sum")
    rows[f"best single SemGrad configuration ({best})"] = best.scores(s)
    for name, values in s.stored.items():
        if name in STORED_LABELS:
            rows[STORED_LABELS[name]] = values
    return rows


def _estimate(scores: FloatArray, s: LabelledSet, resamples: int) -> dict[str, float]:
    e = bootstrap_auroc(scores, s.correct, s.population, resamples=resamples)
    return {"auroc": e.value, "low": e.low, "high": e.high}


def _fmt(e: dict[str, float]) -> str:
    return f"{e['auroc']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def evaluate(data: Data, resamples: int = 2000, output: Path | None = None,
             progress: bool = True, grid: Sequence[float] = C_GRID, folds: int = 5
             ) -> dict[str, Any]:
    steps = tqdm(total=4 + 2 * len(SETS), desc="learned-score report", unit="step",
                 disable=not progress)
    cal = list(data.calibration.values())
    best, best_info = best_semgrad_config(data.calibration)
    steps.update()
    models = {
        LEARNED: fit(cal, *SHIPPED, grid=grid, folds=folds),
        ABLATION: fit(cal, "likelihood", True, grid=grid, folds=folds),
        CONTROL: fit(cal, "likelihood_control", True, grid=grid, folds=folds),
        PER_LAYER: fit(cal, "likelihood+grad_per_layer", True, grid=grid, folds=folds),
    }
    in_domain = {d: fit([data.calibration[d]], "likelihood_control", False, grid=grid,
                        folds=folds) for d in SETS}
    steps.update()
    report: dict[str, Any] = {
        "fitted_on": {d: {"answers": len(s), "wrong": int(s.wrong.sum())}
                      for d, s in data.calibration.items()},
        "shipped": {"features": SHIPPED[0], "balanced_weights": SHIPPED[1],
                    "feature_names": list(FEATURE_SETS[SHIPPED[0]]),
                    "C": models[LEARNED].C, "cv_auroc_by_C": models[LEARNED].cv_scores,
                    "primary": models[LEARNED].fitted.score.primary,
                    "nested_cv_auroc": models[LEARNED].fitted.cv_auroc,
                    "out_of_domain_threshold": models[LEARNED].fitted.score.detector.threshold},
        "primary_of_each_fit": {name: m.fitted.score.primary for name, m in models.items()},
        "best_semgrad_configuration": best_info, "resamples": resamples, "sets": {}}
    probabilities: dict[str, dict[str, FloatArray]] = {}
    for d in SETS:
        s = data.evaluation[d]
        # The shipped score as the guard reads it (out-of-domain answers fall back); the
        # other fits by their model alone, so that feature sets are compared as models.
        probs = {name: m.probability(s, "shipped" if name == LEARNED else "model")
                 for name, m in models.items()}
        probs[LEARNED_MODEL] = models[LEARNED].probability(s, "model")
        probs[FALLBACK] = models[LEARNED].probability(s, "fallback")
        probs[CONTROL_IN_DOMAIN] = in_domain[d].probability(s, "model")
        flagged = float(np.mean([e.out_of_domain for e in models[LEARNED].estimates(s)]))
        probabilities[d] = probs
        rows: dict[str, FloatArray] = {**probs, **fixed_rows(s, best)}
        estimates = {name: _estimate(v, s, resamples) for name, v in rows.items()}
        steps.update()
        like = {n: estimates[n]["auroc"] for n in LIKELIHOOD_ROWS}
        best_like = max(like, key=lambda n: like[n])
        rivals = {
            f"best likelihood-only score on this set ({best_like})": rows[best_like],
            CONTROL: rows[CONTROL], CONTROL_IN_DOMAIN: rows[CONTROL_IN_DOMAIN],
            "nll_per_token": rows["nll_per_token"],
            f"{ABLATION} [gradient ablation]": rows[ABLATION]}
        paired = {f"learned - {name}": asdict(paired_difference(
            rows[LEARNED], v, s.correct, s.population, resamples=resamples))
            for name, v in rivals.items()}
        ece = {name: expected_calibration_error(p, s.correct) for name, p in probs.items()}
        ece[f"{LEARNED}, isotonic map"] = expected_calibration_error(
            models[LEARNED].probability(s, "isotonic"), s.correct)
        thirds_of = (LEARNED, CONTROL, ABLATION, "nll", "nll_per_token", SEMGRAD,
                     f"best single SemGrad configuration ({best})")
        thirds = {name: [asdict(b) for b in length_thirds(rows[name], s.correct,
                                                          s.raw("answer_tokens"))]
                  for name in thirds_of}
        report["sets"][d] = {
            "answers": len(s), "wrong": int(s.wrong.sum()),
            "populations": sorted(set(s.population.tolist())),
            "rows": estimates, "best_likelihood_only": best_like, "paired": paired,
            "ece": ece, "mean_predicted_error": float(probs[LEARNED].mean()),
            "out_of_domain_share": flagged,
            "observed_error": float(s.wrong.mean()),
            "reliability": [asdict(b) for b in reliability_bins(probs[LEARNED], s.correct)],
            "length_thirds": thirds}
        if output is not None:
            from .plots import plot_roc

            plot_roc({n: rows[n] for n in (LEARNED, CONTROL, ABLATION, "nll_per_token", best_like,
                                           SEMGRAD, f"best single SemGrad configuration ({best})")},
                     s.correct, output / f"roc_{d}.png",
                     f"{LABELS[d]} evaluation ({len(s)} answers, {s.wrong.mean():.0%} wrong)")
        steps.update()
    report["transfer"] = transfer(data, resamples=min(resamples, 1000), progress=progress,
                                  grid=grid, folds=folds)
    steps.update()
    if output is not None:
        from .plots import plot_reliability

        plot_reliability({LABELS[d]: (probabilities[d][LEARNED], data.evaluation[d].correct)
                          for d in SETS}, output / "reliability.png")
    steps.update()
    steps.close()
    return report


# -- transfer ----------------------------------------------------------------------------
TRANSFER_TRAINING = {"SciQ cal": ("sciq",), "TruthfulQA cal": ("truthfulqa",),
                     "SciQ + TruthfulQA cal": ("sciq", "truthfulqa"), "RAG cal": ("rag",),
                     "all three cal": SETS}
TRANSFER_FEATURES = ("likelihood_control", "likelihood", "likelihood+grad_summary")


def transfer(data: Data, resamples: int = 1000, progress: bool = True,
             grid: Sequence[float] = C_GRID, folds: int = 5) -> dict[str, Any]:
    """Fit each feature set (the shipped recipe: balanced weights, C by CV on the training
    answers) on each combination of calibration splits, score every evaluation set."""
    out: dict[str, Any] = {}
    cells = list(itertools.product(TRANSFER_FEATURES, TRANSFER_TRAINING.items()))
    for feature_set, (label, trained_on) in tqdm(cells, desc="transfer", unit="fit",
                                                   disable=not progress):
        model = fit([data.calibration[d] for d in trained_on], feature_set, True, grid, folds)
        out[f"{feature_set} | {label}"] = {
            "features": feature_set, "fitted_on": list(trained_on), "C": model.C,
            "auroc": {d: _estimate(model.decision(s), s, resamples)
                      for d, s in data.evaluation.items()}}
    return out


# -- writing -----------------------------------------------------------------------------
def headline_rows(r: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    best_semgrad = f"best single SemGrad configuration ({r['best_semgrad_configuration']['config']})"
    return [
        ("learned score (shipped)", lambda s: LEARNED),
        ("best likelihood-only score (chosen on evaluation: the harshest rival)",
         lambda s: s["best_likelihood_only"]),
        ("likelihood-only regression control (same recipe)", lambda s: CONTROL),
        ("likelihood-only regression control (fitted on this set's calibration split)",
         lambda s: CONTROL_IN_DOMAIN),
        ("NLL", lambda s: "nll"), ("per-token NLL", lambda s: "nll_per_token"),
        ("best single SemGrad configuration (chosen on calibration)", lambda s: best_semgrad),
        ("SemGrad (shipped profile's anchor)", lambda s: SEMGRAD),
    ]


def markdown(r: dict[str, Any], command: str) -> str:
    sets = r["sets"]
    head = " | ".join(f"{LABELS[d]} (n={sets[d]['answers']}, {sets[d]['wrong'] / sets[d]['answers']:.0%}"
                      " wrong)" for d in SETS)
    L = ["# The learned probability of error on the evaluation splits", "",
         f"Produced by `{command}`. Everything fitted or chosen (learned scores, their "
         "regularisation and Platt maps, the best single SemGrad configuration) used the "
         "calibration splits only: " + ", ".join(
             f"{LABELS[d]} {v['answers']} answers ({v['wrong']} wrong)"
             for d, v in r["fitted_on"].items()) + ". Wrong answers are the positives. AUROC "
         f"intervals: percentile bootstrap, {r['resamples']} resamples. The RAG-style set mixes "
         "SciQ-derived and TruthfulQA-derived questions: its AUROC is the mean of the AUROCs "
         "within the two halves, and resampling is done within each half.", "",
         f"Shipped learned score: logistic regression on `{r['shipped']['features']}` "
         f"({len(r['shipped']['feature_names'])} features, balanced population x class "
         f"weights, C={r['shipped']['C']:g} chosen by cross-validation), Platt map on "
         "out-of-fold decisions, fitted by the library's `fit_learned_score` "
         "(semgrad_guard.calibration.learned) with the four source populations as domains. "
         "Out-of-domain answers (Mahalanobis distance above the 99th percentile of the "
         "calibration answers' out-of-fold distances) take the fallback's probability, as "
         "the guard does; the fit's primary score: "
         f"`{r['shipped']['primary']}` (the other fits are read by their model alone; the "
         "library would ship the fallback for a fit whose nested-CV worst domain is below "
         "the fallback's: " + ", ".join(f"{k}: {v}" for k, v in r["primary_of_each_fit"].items())
         + "). Share of evaluation answers out of domain: " + ", ".join(
             f"{LABELS[d]} {r['sets'][d]['out_of_domain_share']:.1%}" for d in SETS) + ".", "",
         "## Headline", "", f"| score | {head} |", "|---|---|---|---|"]
    for label, key in headline_rows(r):
        cells = []
        for d in SETS:
            name = key(sets[d])
            extra = f" ({name})" if "best likelihood" in label else ""
            cells.append(_fmt(sets[d]["rows"][name]) + extra)
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L += ["", "## Paired bootstrap differences of AUROC (learned minus rival)", "",
          f"| difference | {' | '.join(LABELS[d] for d in SETS)} |", "|---|---|---|---|"]
    names = [k.split(" (")[0] if k.startswith("learned - best likelihood") else k
             for k in sets["sciq"]["paired"]]
    for i, label in enumerate(names):
        cells = []
        for d in SETS:
            v = list(sets[d]["paired"].values())[i]
            cells.append(f"{v['value']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}], "
                         f"P(<=0) {v['share_not_above']:.3f}")
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L += ["", "## Gradient ablation (AUROC [95% CI])", "", f"| fitted score | "
          f"{' | '.join(LABELS[d] for d in SETS)} |", "|---|---|---|---|"]
    for name in (LEARNED, LEARNED_MODEL, ABLATION, PER_LAYER, CONTROL, FALLBACK):
        L.append(f"| {name} | " + " | ".join(_fmt(sets[d]["rows"][name]) for d in SETS) + " |")
    L += ["", "## Cross-dataset transfer (AUROC [95% CI] on the evaluation splits)", "",
          "Balanced weights and C by cross-validation on the training splits, as shipped. "
          "Cells marked * were fitted on the same dataset's calibration split.", "",
          "| features | fitted on (calibration splits) | " + " | ".join(LABELS[d] for d in SETS) + " |",
          "|---|---|---|---|---|"]
    for row in r["transfer"].values():
        cells = [_fmt(row["auroc"][d]) + (" *" if d in row["fitted_on"] else "") for d in SETS]
        L.append(f"| {row['features']} | {' + '.join(LABELS[d] for d in row['fitted_on'])} | "
                 + " | ".join(cells) + " |")
    L.append("| per-token NLL (nothing fitted) | - | " + " | ".join(
        _fmt(sets[d]["rows"]["nll_per_token"]) for d in SETS) + " |")
    L += ["", "## Quality of the probability", "",
          "Expected calibration error (10 equal-width bins of the predicted probability of "
          "error); see `reliability.png`.", "",
          f"| fitted score | {' | '.join(LABELS[d] for d in SETS)} |", "|---|---|---|---|"]
    for name in sets["sciq"]["ece"]:
        L.append(f"| {name} | " + " | ".join(f"{sets[d]['ece'][name]:.3f}" for d in SETS) + " |")
    L.append("| mean predicted vs observed error (learned) | " + " | ".join(
        f"{sets[d]['mean_predicted_error']:.3f} vs {sets[d]['observed_error']:.3f}"
        for d in SETS) + " |")
    L += ["", "## AUROC within answer-length thirds", ""]
    for d in SETS:
        bands = next(iter(sets[d]["length_thirds"].values()))
        L += [f"{LABELS[d]}:", "", "| score | " + " | ".join(
            f"{b['shortest']}-{b['longest']} tokens (n={b['answers']}, {b['wrong_share']:.0%} "
            "wrong)" for b in bands) + " |", "|---|---|---|---|"]
        for name, bs in sets[d]["length_thirds"].items():
            L.append(f"| {name} | " + " | ".join(f"{b['auroc']:.3f}" for b in bs) + " |")
        L.append("")
    b = r["best_semgrad_configuration"]
    L += ["## Every row", "",
          f"Best single SemGrad configuration, chosen among {b['candidates']} by its worst "
          "calibration AUROC: " + b["config"] + " (calibration: " + ", ".join(
              f"{LABELS[d]} {v:.3f}" for d, v in b["calibration_auroc"].items()) + ").", ""]
    for d in SETS:
        L += [f"{LABELS[d]} evaluation:", "", "| score | AUROC [95% CI] |", "|---|---|"]
        for name, e in sorted(sets[d]["rows"].items(), key=lambda kv: -kv[1]["auroc"]):
            L.append(f"| {name} | {_fmt(e)} |")
        L.append("")
    return "\n".join(L) + "\n"


def write(report: dict[str, Any], output: Path, command: str) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=1))
    path = output / "report.md"
    path.write_text(markdown(report, command))
    return path
