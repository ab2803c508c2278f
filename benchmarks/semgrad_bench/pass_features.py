"""The scoring pass's features of labelled answers, as the library's scorer computes them.

Two sources of answers:

- a finished benchmark run folder (``answers.jsonl`` with exact prompt and answer ids and
  the judge's verdict): the stored answers are scored again, nothing is generated;
- a question file (the RAG-style set's JSONL, or any file with ``query`` and ``truthful
  answer``): greedy answers (64 new tokens, 16 at a time, as the benchmark runner), judged
  (containment for SciQ-derived questions, embedding similarity for TruthfulQA-derived
  ones) and scored from generation's own prompt cache.

Every answer gets one ``SemGradScorer`` pass with the anchor at offset -1 in layers 15-29
(the default model's calibrated SemGrad) and feature offsets -1..-6; its
``UncertaintyScore.features`` are appended to ``<output>/<set>.answers.jsonl`` as each
batch finishes (a second run resumes), and ``<output>/<set>.npz`` is packed from them at the
end (the format :mod:`semgrad_bench.feature_sets` reads).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from semgrad_guard.calibration.judges import CorrectnessJudge, judge_for
from semgrad_guard.errors import ConfigError

from .feature_sets import GRADIENT_LAYERS, OFFSETS, LabelledSet, save_set
from .runner import read_jsonl, read_records

BATCH = 16
MAX_NEW_TOKENS = 64
ANCHOR = -1


def make_scorer(lm: Any, layers: Sequence[int] = GRADIENT_LAYERS) -> Any:
    """The scorer of the default model's features (another model names its ``layers``)."""
    from semgrad_guard.scoring.semgrad import SemGradScorer

    return SemGradScorer(lm, anchor_offset=ANCHOR, layers=layers, feature_offsets=OFFSETS,
                         batch_size=BATCH)


def _append(handle: Any, records: Sequence[dict[str, Any]]) -> None:
    handle.write("".join(json.dumps(r) + "\n" for r in records))
    handle.flush()
    os.fsync(handle.fileno())


def features_of_run(lm: Any, run_dir: str | os.PathLike[str], name: str, population: str,
                    output: str | os.PathLike[str], stored: Sequence[str] = (),
                    layers: Sequence[int] = GRADIENT_LAYERS) -> Path:
    """Score a benchmark run's stored answers again; ``stored`` names stored score columns
    to keep beside the features (P(True), sampling baselines)."""
    records = read_records(run_dir)
    if not records:
        raise ConfigError(f"no answers in {run_dir}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.answers.jsonl"
    seen = {r["index"] for r in read_jsonl(path)}
    todo = [r for r in records if r["index"] not in seen]
    scorer = make_scorer(lm, layers)
    with path.open("a", encoding="utf-8") as handle, tqdm(
            total=len(records), initial=len(records) - len(todo), desc=name,
            unit="answer") as bar:
        for lo in range(0, len(todo), BATCH):
            batch = todo[lo:lo + BATCH]
            scores = scorer.score_batch([(r["prompt_ids"], r["response_ids"]) for r in batch])
            _append(handle, [{
                "index": r["index"], "population": population, "correct": bool(r["correct"]),
                "features": s.features,
                "stored": {k: r["scores"][k] for k in stored if k in r.get("scores", {})}}
                for r, s in zip(batch, scores, strict=True)])
            bar.update(len(batch))
    return pack(out, name)


def features_of_questions(lm: Any, questions: str | os.PathLike[str], name: str,
                          population: str, output: str | os.PathLike[str],
                          judge: CorrectnessJudge | None = None,
                          layers: Sequence[int] = GRADIENT_LAYERS) -> Path:
    """Generate, judge and score answers to a question file (RAG-style items)."""
    rows = [json.loads(line) for line in Path(questions).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.answers.jsonl"
    seen = {(r["population"], r["index"]) for r in read_jsonl(path)}
    todo = [r for r in rows if (population, r.get("source_index", 0)) not in seen]
    judge = judge or judge_for(str(rows[0].get("source_dataset", "")) if rows else "")
    scorer = make_scorer(lm, layers)
    with path.open("a", encoding="utf-8") as handle, tqdm(
            total=len(rows), initial=len(rows) - len(todo), desc=f"{name} ({population})",
            unit="question") as bar:
        for lo in range(0, len(todo), BATCH):
            batch = todo[lo:lo + BATCH]
            gens = lm.generate_batch([[{"role": "user", "content": r["query"]}] for r in batch],
                                     max_new_tokens=MAX_NEW_TOKENS)
            scores = scorer.score_batch(gens)
            _append(handle, [{
                "index": r["source_index"], "population": population,
                "question": r["question"], "answerable": r.get("answerable"),
                "answer": g.text, "prompt_ids": list(g.prompt_ids),
                "response_ids": list(g.response_ids),
                "correct": bool(judge.is_correct(g.text, r["truthful answer"])),
                "features": s.features}
                for r, g, s in zip(batch, gens, scores, strict=True)])
            bar.update(len(batch))
    return pack(out, name)


def pack(output: str | os.PathLike[str], name: str) -> Path:
    """Write ``<name>.npz`` from ``<name>.answers.jsonl`` (features every answer has)."""
    records = read_jsonl(Path(output) / f"{name}.answers.jsonl")
    if not records:
        raise ConfigError(f"no scored answers for {name} in {output}")
    names = [n for n in records[0]["features"] if all(n in r["features"] for r in records)]
    stored_names = [k for k in records[0].get("stored", {})
                    if all(k in r.get("stored", {}) for r in records)]
    labelled = LabelledSet(
        name, np.array([[r["features"][n] for n in names] for r in records], dtype=np.float64),
        names, np.array([r["correct"] for r in records], dtype=bool),
        np.array([r["index"] for r in records], dtype=np.int64),
        np.array([r["population"] for r in records]),
        {k: np.array([r["stored"][k] for r in records], dtype=np.float64) for k in stored_names})
    return save_set(output, labelled)


def verify(lm: Any, run_dir: str | os.PathLike[str], features: str | os.PathLike[str],
           name: str, answers: int = 10, population: str | None = None) -> dict[str, Any]:
    """Score the first ``answers`` answers of a run folder again and compare with a
    features file (rows of ``population`` only, when given): the largest relative
    difference per feature family, and features one side lacks."""
    from .feature_sets import load_set

    stored = load_set(features, name)
    by_index = {int(i): k for k, i in enumerate(stored.index)
                if population is None or stored.population[k] == population}
    records = [r for r in read_records(run_dir) if r["index"] in by_index
               and (population is None or r.get("population", population) == population)
               ][:answers]
    if not records:
        raise ConfigError(f"no answer of {run_dir} is in {features}/{name}.npz")
    scores = make_scorer(lm).score_batch([(r["prompt_ids"], r["response_ids"]) for r in records])
    worst: dict[str, float] = {}
    missing: set[str] = set()
    for r, s in zip(records, scores, strict=True):
        row = stored.features[by_index[r["index"]]]
        for j, n in enumerate(stored.names):
            if n not in s.features:
                missing.add(n)
                continue
            family = n.split("/")[0]
            rel = abs(s.features[n] - row[j]) / max(abs(row[j]), 1e-12)
            worst[family] = max(worst.get(family, 0.0), rel)
    return {"answers": len(records), "max_relative_difference": max(worst.values()),
            "by_feature": worst, "missing": sorted(missing),
            "extra": sorted(set(scores[0].features) - set(stored.names))}
