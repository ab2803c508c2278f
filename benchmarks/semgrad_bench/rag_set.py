"""The RAG-style question set: context passages, then a question they answer or do not.

This is the guard's real job: a retriever found the right document, or it did not, and
the model answers anyway. Built deterministically from the shared SciQ and TruthfulQA
files, so it is rebuilt rather than redistributed.

Each item is one user message: a context of four short passages, then the reference
question-answering instruction and the question. Half the items are *answerable* (one
passage states the answer, three are distractors), half *unanswerable* (four distractors;
the question's own passage is left out).

Passages. Every question of a split yields one passage: the rewording of the question that
shares the fewest words with it (so that finding it takes reading, not string matching)
followed by its first gold answer, e.g. "Which scientist came up with the idea of evolution
through natural selection? Darwin." The model is asked the original wording.

Distractors. The passages of the questions nearest to the asked one (cosine of
all-MiniLM-L6-v2 embeddings of the questions) from the same dataset and split, as a dense
retriever would return them. Near duplicates are skipped: a candidate whose question has
cosine >= 0.9 with the asked one, or whose gold answer the containment judge would accept
for the asked question (either way round).

Splits. The calibration part uses only calibration-split lines (0-299) for questions and
passages, the evaluation part only evaluation-split lines (300 on). A part takes the first
``per_dataset`` questions of each dataset's split; which are answerable is a seeded
permutation of the whole split (half each), so a longer set keeps a shorter one's items.
Passage order is shuffled by an RNG seeded by the question's line.

Files: ``<folder>/rag-<part>/<dataset>.jsonl`` with ``query`` (the whole user message),
``truthful answer`` (gold), ``question``, ``answerable``, ``source_dataset``,
``source_index`` (the question's line), ``passages`` (their lines), ``gold_position``;
``<folder>/manifest.json`` records each file's SHA-256 so that a rebuild can be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from semgrad_guard.calibration.datasets import QAItem, Split, load_qa
from semgrad_guard.calibration.judges import ContainmentJudge, normalize_answer
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.prompts import QA_INSTRUCTION

DATASETS = ("sciq", "truthfulqa")
PARTS: tuple[Split, ...] = ("calibration", "evaluation")
PASSAGES = 4
DUPLICATE_COSINE = 0.9
TEMPLATE = "Context:\n{context}\n\n" + QA_INSTRUCTION


def reworded(question: str, paraphrases: list[str]) -> str:
    """The paraphrase sharing the fewest words with the question (Jaccard over normalised
    words; ties: the first listed); the question itself when there is none."""
    words = set(normalize_answer(question).split())
    best, best_overlap = question, 2.0
    for p in paraphrases:
        other = set(normalize_answer(p).split())
        if not other:
            continue
        overlap = len(words & other) / len(words | other)
        if overlap < best_overlap:
            best, best_overlap = p, overlap
    return best


def passage(item: QAItem) -> str:
    """The passage a question contributes: its rewording, then its first gold answer."""
    answer = item.answers[0].strip()
    answer = answer[:1].upper() + answer[1:]
    if not answer.endswith((".", "!", "?")):
        answer += "."
    return f"{reworded(item.question, item.paraphrases)} {answer}"


def build(pool: list[QAItem], dataset: str, part: str, per_dataset: int, seed: int,
          vectors: np.ndarray) -> list[dict[str, Any]]:
    """The items of one dataset's part; ``vectors`` are the unit-norm embeddings of the
    pool's questions."""
    judge = ContainmentJudge()
    sims = vectors @ vectors.T
    passages = [passage(it) for it in pool]
    key = [seed, DATASETS.index(dataset), PARTS.index(part)]  # type: ignore[arg-type]
    answerable = np.zeros(len(pool), dtype=bool)
    answerable[np.random.default_rng(key).permutation(len(pool))[: len(pool) // 2]] = True
    items = []
    for i in range(min(per_dataset, len(pool))):
        target = pool[i]
        distractors: list[int] = []
        for j in np.argsort(-sims[i], kind="stable"):
            if j == i or sims[i, j] >= DUPLICATE_COSINE:
                continue
            other = pool[j]
            if any(judge.is_correct(a, target.answers) for a in other.answers) or any(
                    judge.is_correct(a, other.answers) for a in target.answers):
                continue
            distractors.append(int(j))
            if len(distractors) == PASSAGES:
                break
        chosen = ([i] + distractors[: PASSAGES - 1]) if answerable[i] else distractors
        order = np.random.default_rng([*key, target.index]).permutation(len(chosen))
        chosen = [chosen[k] for k in order]
        items.append({
            "query": TEMPLATE.format(context="\n".join(passages[j] for j in chosen),
                                     question=target.question),
            "truthful answer": target.answers, "question": target.question,
            "answerable": bool(answerable[i]), "source_dataset": dataset,
            "source_index": target.index, "passages": [pool[j].index for j in chosen],
            "gold_position": chosen.index(i) if answerable[i] else None})
    return items


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_rag_set(folder: str | os.PathLike[str], per_dataset: int = 150, seed: int = 0,
                  progress: bool = True) -> dict[str, Any]:
    """Build both parts of both datasets into ``folder``; returns the manifest."""
    from semgrad_guard.embeddings import load_sentence_encoder

    out = Path(folder)
    encoder = load_sentence_encoder()
    manifest: dict[str, Any] = {"per_dataset": per_dataset, "seed": seed, "files": {}}
    jobs = [(part, dataset) for part in PARTS for dataset in DATASETS]
    for part, dataset in tqdm(jobs, desc="RAG-style set", unit="file", disable=not progress):
        pool = load_qa(dataset, part)
        vectors = np.asarray(encoder.encode([it.question for it in pool],
                                            normalize_embeddings=True, show_progress_bar=False))
        items = build(pool, dataset, part, per_dataset, seed, vectors)
        path = out / f"rag-{part}" / f"{dataset}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
        manifest["files"][f"rag-{part}/{dataset}.jsonl"] = {
            "items": len(items), "answerable": sum(it["answerable"] for it in items),
            "sha256": _sha256(path)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def check_rag_set(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Raise ConfigError unless every file of ``manifest`` is in ``folder`` unchanged."""
    for name, entry in manifest["files"].items():
        path = Path(folder) / name
        if not path.is_file():
            raise ConfigError(f"{path} is missing: build it with 'semgrad-bench rag-set'")
        if _sha256(path) != entry["sha256"]:
            raise ConfigError(f"{path} differs from the recorded build (SHA-256); rebuild it "
                              "with 'semgrad-bench rag-set'")
