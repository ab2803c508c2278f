"""The results of a run folder: per-answer table, summary table, costs and plots.

``summary.csv`` / ``summary.md`` hold, per method, AUROC, AUPR and PRR with bootstrap
95% intervals ("incorrect" is the positive class), the mean seconds per answer and
that time as a multiple of the greedy generation of the answer.

Questions the model gave no answer to are counted apart: the metrics are over the
answers with content, and ``auroc_all`` beside them is over every question, the empty
answers wrong and ranked most uncertain (as the guard treats them). A run where most
answers are empty would otherwise report how well a score tells empty from not.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .combined import COMBINED_SCORES, CombinedScore
from .metrics import METRICS, bootstrap
from .runner import CONFIG_FILE, is_answered, read_records

#: Display names, in the order tables list them.
METHOD_LABELS: dict[str, str] = {
    "semgrad": "SemGrad (calibrated anchor)",
    "hybridgrad": "HybridGrad (calibrated anchor)",
    "semgrad_default": "SemGrad (default anchor)",
    "hybridgrad_default": "HybridGrad (default anchor)",
    "semgrad_sum": "SemGrad x answer tokens (summed objective, post hoc)",
    "combined_semgrad_likelihood": "SemGrad + likelihood (logistic, ours)",
    "combined_likelihood": "likelihood only (logistic, control)",
    "nll": "NLL",
    "nll_per_token": "length-normalised NLL",
    "mean_entropy": "mean token entropy",
    "max_prob": "max probability (1 - mean top p)",
    "p_true": "P(True)",
    "semantic_entropy_k5": "semantic entropy K=5 (embedding-clustered, no NLI)",
    "semantic_entropy_k10": "semantic entropy K=10 (embedding-clustered, no NLI)",
    "lexical_similarity_k5": "lexical similarity K=5 (1 - ROUGE-L)",
    "lexical_similarity_k10": "lexical similarity K=10 (1 - ROUGE-L)",
    "eigenscore_k5": "EigenScore-style K=5 (MiniLM embeddings)",
    "eigenscore_k10": "EigenScore-style K=10 (MiniLM embeddings)",
    "answer_length": "answer length in tokens (trivial reference)",
}

TABLE_FIELDS = ("index", "question", "gold", "answer", "no_answer", "correct", "answer_tokens",
                "stop_reason")


def add_combined_scores(records: list[dict[str, Any]], calibration: Sequence[dict[str, Any]]
                        ) -> dict[str, Any]:
    """Fit the combined scores on ``calibration`` and add them to ``records`` in place;
    returns the fitted weights. Their cost is the SemGrad pass, which yields every feature."""
    fits: dict[str, Any] = {}
    for name, features in COMBINED_SCORES.items():
        usable = [r for r in calibration if all(f in r["scores"] for f in features)]
        if not usable or not all(all(f in r["scores"] for f in features) for r in records):
            continue
        fit = CombinedScore.fit(usable, features)
        for record, value in zip(records, fit.score(records), strict=True):
            record["scores"][name] = value
            # The likelihood features need the forward pass; SemGrad the backward too.
            cost = "semgrad" if "semgrad" in features else "nll"
            record["times"][name] = record["times"][cost]
        fits[name] = fit.to_dict()
    return fits


def add_derived_scores(records: list[dict[str, Any]]) -> None:
    """Scores computed from stored ones, at no extra cost.

    ``semgrad_sum`` is SemGrad of the summed (not averaged) objective: ``J_sum = T * J``,
    so its gradient is exactly ``T`` times SemGrad's. ``answer_length`` is the number of
    answer tokens, a reference any score should beat.
    """
    for r in records:
        r["scores"]["answer_length"] = float(r["answer_tokens"])
        r["times"]["answer_length"] = 0.0
        if "semgrad" in r["scores"]:
            r["scores"]["semgrad_sum"] = r["scores"]["semgrad"] * r["answer_tokens"]
            r["times"]["semgrad_sum"] = r["times"]["semgrad"]


def method_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Scores every record has, in table order."""
    common = set.intersection(*(set(r["scores"]) for r in records)) if records else set()
    ordered = [m for m in METHOD_LABELS if m in common]
    return ordered + sorted(common - set(ordered))


def write_answer_table(records: Sequence[dict[str, Any]], methods: Sequence[str],
                       path: Path) -> None:
    """One CSV row per answer: question, answer, correctness, every score and time."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*TABLE_FIELDS, *methods, "time_generation",
                         *(f"time_{m}" for m in methods)])
        for r in records:
            fields = {**r, "no_answer": not is_answered(r)}
            writer.writerow([*(json.dumps(fields[k]) if k == "gold" else fields[k]
                               for k in TABLE_FIELDS),
                             *(r["scores"].get(m, "") for m in methods), r["times"]["generation"],
                             *(r["times"].get(m, "") for m in methods)])


def summarize(run_dir: str | os.PathLike[str], calibration_dir: str | os.PathLike[str] | None
              = None, *, resamples: int = 1000, plots: bool = True) -> list[dict[str, Any]]:
    """Compute and write the summary of a run folder; returns its rows."""
    run_dir = Path(run_dir)
    everything = read_records(run_dir)
    if not everything:
        return []
    records = [r for r in everything if is_answered(r)]
    empty = len(everything) - len(records)
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    fits: dict[str, Any] = {}
    if calibration_dir is not None:
        calibration = [r for r in read_records(calibration_dir) if is_answered(r)]
        if calibration and records:
            fits = add_combined_scores(records, calibration)
    add_derived_scores(records)
    methods = method_names(records)
    correct = [bool(r["correct"]) for r in records]
    # Every question, the empty answers wrong: the guard never passes them.
    correct_all = [bool(r["correct"]) and is_answered(r) for r in everything]
    generation = float(np.mean([r["times"]["generation"] for r in everything]))
    rows = []
    for m in methods:
        scores = [float(r["scores"][m]) for r in records]
        row: dict[str, Any] = {"method": m, "label": METHOD_LABELS.get(m, m)}
        for metric_name, metric in METRICS.items():
            est = bootstrap(metric, scores, correct, resamples=resamples)
            row.update({metric_name: est.value, f"{metric_name}_low": est.low,
                        f"{metric_name}_high": est.high})
        est = bootstrap(METRICS["auroc"], _empty_most_uncertain(everything, m), correct_all,
                        resamples=resamples)
        row.update(auroc_all=est.value, auroc_all_low=est.low, auroc_all_high=est.high)
        seconds = float(np.mean([r["times"].get(m, np.nan) for r in records]))
        row.update(seconds_per_answer=seconds, cost_vs_generation=seconds / generation)
        rows.append(row)
    write_answer_table(everything, methods, run_dir / "answers.csv")
    if rows:
        with (run_dir / "summary.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    meta = {"dataset": config["dataset"], "split": config["split"], "model": config["model"],
            "judge": config["judge"], "judge_threshold": config.get("judge_threshold"),
            "hardware": config.get("hardware", "CPU"),
            "prompt_format": config.get("prompt_format",
                                        {"kind": config.get("extra", {}).get("prompt_format")}),
            "questions": len(everything), "answers": len(records), "no_answer": empty,
            "no_answer_share": empty / len(everything),
            "wrong_share": 1.0 - float(np.mean(correct)) if records else float("nan"),
            "wrong_share_all": 1.0 - float(np.mean(correct_all)),
            "generation_seconds_per_answer": generation,
            "mean_answer_tokens": float(np.mean([r["answer_tokens"] for r in records]))
            if records else float("nan"),
            "anchors": config.get("anchors", {}), "combined_fits": fits,
            "bootstrap_resamples": resamples}
    (run_dir / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (run_dir / "summary.md").write_text(markdown_table(rows, meta))
    if plots and rows:
        from .plots import plot_curves

        plot_curves({m: [r["scores"][m] for r in records] for m in methods}, correct, run_dir,
                    title=f"{config['dataset']} {config['split']} (n={len(records)} answers"
                          + (f", {empty} empty left out)" if empty else ")"),
                    labels=METHOD_LABELS)
    return rows


def _empty_most_uncertain(records: Sequence[dict[str, Any]], method: str) -> list[float]:
    """The method's scores over every question, an empty answer above every answer's (the
    ranking metrics only see the order)."""
    values = [float(r["scores"][method]) for r in records if is_answered(r)]
    top = max(values, default=0.0) + 1.0
    return [float(r["scores"][method]) if is_answered(r) else top for r in records]


def markdown_table(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    questions, empty = meta.get("questions", meta["answers"]), meta.get("no_answer", 0)
    lines = [f"# {meta['dataset']} / {meta['split']}: {meta['answers']} answers, "
             f"{meta['wrong_share']:.0%} wrong ({meta['judge']} judge); {empty} of "
             f"{questions} questions ({empty / questions:.0%}) without an answer", "",
             f"Model: {meta['model']}, timed on {meta.get('hardware', 'CPU')}. Greedy generation: "
             f"{meta['generation_seconds_per_answer']:.2f} s per answer "
             f"({meta['mean_answer_tokens']:.1f} tokens on average).", ""]
    head = "| method | AUROC [95% CI] | AUPR [95% CI] | PRR [95% CI] |"
    if empty:
        lines += [f"AUROC, AUPR and PRR are over the {meta['answers']} answers with content. "
                  f"\"AUROC, all\" is over all {questions} questions, the {empty} empty "
                  "answers counted wrong and ranked most uncertain, as the guard treats them: "
                  "it mostly measures how well a score tells empty from not.", ""]
        head += " AUROC, all [95% CI] |"
    lines += [head + " s / answer | x generation |",
              "|---|---|---|---|" + ("---|" if empty else "") + "---|---|"]
    parts = ("auroc", "aupr", "prr", "auroc_all") if empty else ("auroc", "aupr", "prr")
    for r in sorted(rows, key=lambda r: -r["auroc"] if r["auroc"] == r["auroc"] else 0.0):
        cells = [f"{r[m]:.3f} [{r[m + '_low']:.3f}, {r[m + '_high']:.3f}]" for m in parts]
        lines.append(f"| {r['label']} | {' | '.join(cells)} | {r['seconds_per_answer']:.3f} | "
                     f"{r['cost_vs_generation']:.2f} |")
    return "\n".join(lines) + "\n"
