"""Supervised calibration: labelled answers in, a model profile with a learned
probability of error out (``semgrad-guard calibrate --labelled``).

1. answers: generated and judged here (:func:`~.labelling.label_answers`), or read from a
   JSONL file of answers already labelled (:func:`read_labelled_answers`);
2. features: every answer's scoring pass, with the model profile's anchor
   (:func:`score_labelled`; answers that carry features are not scored again);
3. fit: the best single SemGrad configuration (:func:`select_semgrad`) and the learned
   score (:func:`~.learned.fit_learned_score`), written into the profile
   (:func:`fit_profile`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DegenerateDataError
from ..scoring.profile import PROFILE_VERSION, ModelProfile
from .labelling import LabelledScore
from .learned import (
    LearnedFit,
    _folds,
    check_labels,
    default_features,
    fit_learned_score,
    within_domain_auroc,
)

#: Fields of a labelled-answers JSONL record (``--from-answers``).
ANSWER_FIELDS = {
    "prompt_ids": "the exact prompt token ids the answer was generated from (required)",
    "response_ids": "the exact answer token ids (required)",
    "correct": "true when the judge found the answer correct (required)",
    "domain": "the data set it belongs to (default: the file's name)",
    "question": "the question (optional)",
    "answer": "the answer text (optional)",
    "features": "the scoring pass's features (optional; scored when missing)",
}


def read_labelled_answers(path: str | os.PathLike[str], domain: str | None = None
                          ) -> list[LabelledScore]:
    """Labelled answers from a JSONL file (fields: :data:`ANSWER_FIELDS`); a
    labelled-answers file's settings line is skipped, and so is half a line at the end
    of a run cut short."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labelled answers {path}: no such file")
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue
            raise ConfigError(f"{path}, line {number}: not JSON ({exc})") from exc
        if "settings" in record and len(record) == 1:
            continue
        missing = [k for k in ("prompt_ids", "response_ids", "correct") if k not in record]
        if missing:
            raise ConfigError(f"{path}, line {number}: no field {missing[0]!r}; a labelled "
                              f"answer needs prompt_ids, response_ids and correct")
        rows.append(LabelledScore(
            index=int(record.get("index", number - 1)), question=str(record.get("question", "")),
            answer=str(record.get("answer", "")), scores=dict(record.get("scores") or {}),
            correct=bool(record["correct"]), stop_reason=str(record.get("stop_reason", "")),
            features={str(k): float(v) for k, v in (record.get("features") or {}).items()},
            domain=str(record.get("domain") or domain or path.stem),
            prompt_ids=[int(i) for i in record["prompt_ids"]],
            response_ids=[int(i) for i in record["response_ids"]]))
    if not rows:
        raise DegenerateDataError(f"labelled answers {path}: the file has no answers")
    return rows


def score_labelled(rows: Sequence[LabelledScore], scorer: Any, *, batch_size: int = 8,
                   on_batch: Callable[[list[LabelledScore]], None] | None = None
                   ) -> list[LabelledScore]:
    """The answers with the features of their scoring pass; answers that already carry
    features keep them. ``on_batch`` receives each newly scored batch (to save it)."""
    from tqdm import tqdm

    todo = [i for i, row in enumerate(rows) if not row.features]
    out = list(rows)
    if not todo:
        return out
    with tqdm(total=len(todo), desc="score labelled answers", unit="answer",
              file=sys.stderr) as bar:
        for start in range(0, len(todo), max(1, batch_size)):
            chunk = todo[start:start + max(1, batch_size)]
            scored = scorer.score_batch([(rows[i].prompt_ids, rows[i].response_ids)
                                         for i in chunk])
            batch = [replace(rows[i], features=dict(s.features), scores=dict(s.scores))
                     for i, s in zip(chunk, scored, strict=True)]
            for i, row in zip(chunk, batch, strict=True):
                out[i] = row
            if on_batch is not None:
                on_batch(batch)
            bar.update(len(chunk))
    return out


def _layer_sets(layers: Sequence[int]) -> dict[str, tuple[int, ...]]:
    layers = tuple(sorted(layers))
    sets = {_layer_set_label(layers): layers}
    for part in np.array_split(np.array(layers), 3):
        if len(part):
            subset = tuple(int(v) for v in part)
            sets[_layer_set_label(subset)] = subset
    return sets


def _semgrad_config(rows: Sequence[dict[str, float]], offset: int, layers: Sequence[int],
                    norm: str, normalisation: str) -> np.ndarray | None:
    values = []
    for row in rows:
        parts = [row.get(f"grad_{norm}/{offset}/{layer}") for layer in layers]
        if any(p is None for p in parts):
            return None
        v = float(np.mean(parts))  # type: ignore[arg-type]
        values.append(v * row["answer_tokens"] if normalisation == "sum" else v)
    return np.array(values)


def select_semgrad(rows: Sequence[dict[str, float]], wrong: Sequence[bool],
                   domains: Sequence[str], *, sps_offset: int, layers: Sequence[int],
                   folds: int = 5) -> dict[str, Any]:
    """The best single SemGrad configuration (anchor offset, layer set, L1 or L2 norm,
    mean or sum normalisation) by its worst within-domain AUROC, beside the SPS choice
    (the profile's anchor over its layers, L1, mean), with the cross-validated AUROC of
    choosing that way (chosen on 4/5 of the answers, measured on the rest)."""
    y = np.array([int(bool(w)) for w in wrong])
    groups = np.array([str(d) for d in domains])
    offsets = sorted({int(name.split("/")[1]) for row in rows for name in row
                      if name.startswith("grad_l1/")}, reverse=True)
    table: dict[tuple[Any, ...], np.ndarray] = {}
    for k, (label, layer_set), norm, nz in itertools.product(
            offsets, _layer_sets(layers).items(), ("l1", "l2"), ("mean", "sum")):
        values = _semgrad_config(rows, k, layer_set, norm, nz)
        if values is not None:
            table[(k, label, norm, nz)] = values
    if not table:
        raise DegenerateDataError("the answers carry no anchor-gradient features "
                                  "(grad_l1/<offset>/<layer>)")

    def describe(config: tuple[Any, ...], idx: np.ndarray | None = None) -> dict[str, Any]:
        idx = np.arange(len(y)) if idx is None else idx
        auroc = within_domain_auroc(table[config][idx], y[idx], groups[idx])
        k, label, norm, nz = config
        return {"offset": k, "layers": label, "norm": norm, "normalisation": nz,
                "auroc": auroc, "worst": min(auroc.values())}

    def best(idx: np.ndarray) -> tuple[Any, ...]:
        return max(table, key=lambda c: describe(c, idx)["worst"])

    chosen = best(np.arange(len(y)))
    cv: dict[str, list[float]] = {}
    for tr, te in _folds(y, groups, folds, 0):
        for g, value in within_domain_auroc(table[best(tr)][te], y[te], groups[te]).items():
            cv.setdefault(g, []).append(value)
    sps_key = (sps_offset, _layer_set_label(layers), "l1", "mean")
    return {"best": {**describe(chosen), "cv_auroc": {g: float(np.mean(v)) for g, v in cv.items()}},
            "sps": describe(sps_key) if sps_key in table else None,
            "candidates": len(table)}


def _layer_set_label(layers: Sequence[int]) -> str:
    return f"{min(layers)}-{max(layers)}"


def fit_profile(base: ModelProfile, rows: Sequence[LabelledScore], *, default_offset: int,
                judge: str, data: dict[str, Any] | None = None
                ) -> tuple[ModelProfile, LearnedFit, dict[str, Any]]:
    """Fit the learned score and the SemGrad selection on scored labelled answers and
    return ``base`` with both (format version :data:`PROFILE_VERSION`)."""
    features = [row.features for row in rows]
    wrong = [not row.correct for row in rows]
    domains = [row.domain or "user" for row in rows]
    check_labels(wrong, domains)
    offsets = sorted({int(name.split("/")[1]) for name in features[0]
                      if name.startswith("grad_l2/")}, reverse=True)
    offsets = [k for k in offsets if all(_has_offset(f, k) for f in features)]
    names = default_features(offsets, default_offset)
    if f"grad_l1_mean/{default_offset}" not in _available(features[0]):
        names = tuple(n for n in names if n != f"grad_l1_mean/{default_offset}")
    fit = fit_learned_score(features, wrong, domains, features=names, judge=judge)
    selection = select_semgrad(features, wrong, domains, sps_offset=base.anchor_offset,
                               layers=base.layers)
    record = dict(base.data)
    record["labelled"] = {
        **(data or {}), "answers": len(rows), "wrong": sum(wrong),
        "domains": sorted(set(domains)), "judge": judge,
        # What each max_error_probability does on these answers (out-of-fold
        # probabilities): the share passed and the error rate among them.
        "pass_rates": {f"{t:g}": [round(share, 4), None if error != error else round(error, 4)]
                       for t, share, error in fit.pass_rates((0.3, 0.4, 0.5, 0.6, 0.7, 0.8))}}
    profile = replace(base, version=PROFILE_VERSION, learned=fit.score,
                      semgrad_selection=selection, data=record)
    return profile, fit, selection


def _has_offset(features: dict[str, float], offset: int) -> bool:
    return any(name.startswith(f"grad_l2/{offset}/") for name in features)


def _available(features: dict[str, float]) -> set[str]:
    names = set(features)
    for name in features:
        if name.startswith(("grad_l1/", "grad_l2/")):
            norm, offset, _ = name.split("/")
            names.add(f"{norm}_mean/{offset}")
    return names


def report(profile: ModelProfile, fit: LearnedFit, selection: dict[str, Any]) -> str:
    """What the fit measured, as text."""
    score = fit.score
    lines = [f"{score.n} labelled answers ({score.n_wrong} wrong) from "
             f"{', '.join(score.domains)}; judge {score.judge or 'given'}; data "
             f"{score.data_fingerprint}",
             f"learned score: {len(score.features)} features, C={score.C:g}, "
             f"Platt a={score.platt.coef:.4g} b={score.platt.intercept:.4g}; out of domain "
             f"beyond Mahalanobis distance {score.detector.threshold:.3g} "
             f"(q{score.detector.quantile:g} of calibration answers)",
             "cross-validated AUROC within each domain:"]
    for name, per in fit.cv_auroc.items():
        figures = ", ".join(f"{d} {v:.3f}" for d, v in per.items())
        lines.append(f"  {name:9s} {figures} (worst {min(per.values()):.3f})")
    lines.append(f"primary score: {score.primary}")
    lines.append("max_error_probability -> share of calibration answers passed (out of fold), "
                 "error rate among them:")
    for t, share, error in fit.pass_rates((0.3, 0.4, 0.5, 0.6, 0.7)):
        lines.append(f"  {t:.1f} -> {share:.3f}, {error:.3f}")
    best, sps = selection["best"], selection["sps"]
    lines.append(f"best single SemGrad configuration: offset {best['offset']}, layers "
                 f"{best['layers']}, {best['norm'].upper()}, {best['normalisation']}: AUROC "
                 + ", ".join(f"{d} {v:.3f}" for d, v in best["auroc"].items())
                 + "; cross-validated " + ", ".join(f"{d} {v:.3f}"
                                                    for d, v in best["cv_auroc"].items()))
    if sps is not None:
        lines.append(f"SPS choice (offset {sps['offset']}, layers {sps['layers']}, L1, mean): "
                     "AUROC " + ", ".join(f"{d} {v:.3f}" for d, v in sps["auroc"].items()))
    return "\n".join(lines)
