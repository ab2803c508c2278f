"""Follow-up questions on a finished run, answered from its stored records.

- ``anchor_sweep``: SemGrad's AUROC at every anchor offset of the prompt's template tail,
  re-scoring the stored exact ids (no generation): does the anchor choice explain a
  weak SemGrad?
- ``rejudge``: every method's AUROC under another correctness judge: does the judge?
- ``length_effect``: each method's rank correlation with the answer length, and its AUROC
  within answer-length bands: does a score find wrong answers, or long ones?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from semgrad_guard.calibration.judges import CorrectnessJudge
from semgrad_guard.model.local_model import LocalModel
from semgrad_guard.scoring.semgrad import SemGradScorer

from .metrics import auroc


def anchor_sweep(lm: LocalModel, records: Sequence[dict[str, Any]], offsets: Sequence[int],
                 batch_size: int = 16, progress: bool = True) -> list[dict[str, Any]]:
    """AUROC of SemGrad (upper-half layers, no PG) at each offset, on the stored answers."""
    pairs = [(r["prompt_ids"], r["response_ids"]) for r in records]
    correct = [bool(r["correct"]) for r in records]
    rows = []
    bar = tqdm(total=len(offsets) * len(pairs), desc="anchor sweep", unit="answer",
               disable=not progress)
    for offset in offsets:
        scorer = SemGradScorer(lm, profile=None, anchor_offset=offset, hybrid=False,
                               batch_size=batch_size)
        results = []
        for lo in range(0, len(pairs), batch_size):
            results += scorer.score_batch(pairs[lo:lo + batch_size])
            bar.update(min(batch_size, len(pairs) - lo))
        rows.append({"offset": offset, "token": results[0].anchor_token,
                     "layers": list(scorer.anchor.layers),
                     "auroc": auroc([r.scores["semgrad"] for r in results], correct),
                     "seconds_per_answer": sum(r.timings["total"] for r in results) / len(results)})
    bar.close()
    return rows


def rejudge(records: Sequence[dict[str, Any]], judge: CorrectnessJudge,
            methods: Sequence[str]) -> dict[str, Any]:
    """Labels from another judge, and each method's AUROC under them."""
    labels = [bool(judge.is_correct(r["answer"], r["gold"])) for r in records]
    return {"judge": judge.name, "threshold": getattr(judge, "threshold", None),
            "wrong_share": 1.0 - sum(labels) / len(labels),
            "agreement_with_run_judge": sum(a == bool(r["correct"]) for a, r in
                                            zip(labels, records, strict=True)) / len(labels),
            "auroc": {m: auroc([r["scores"][m] for r in records], labels) for m in methods}}


def length_effect(records: Sequence[dict[str, Any]], methods: Sequence[str],
                  bands: int = 3) -> dict[str, Any]:
    """Spearman correlation of each score with the answer length in tokens, and its AUROC
    within ``bands`` answer-length bands of (nearly) equal size.

    A band holding only right or only wrong answers has AUROC NaN.
    """
    tokens = np.array([r["answer_tokens"] for r in records], dtype=np.float64)
    correct = np.array([bool(r["correct"]) for r in records])
    # Bands by rank, so that ties in length do not leave a band empty.
    order = np.argsort(tokens, kind="mergesort")
    groups = np.array_split(order, bands)
    edges = [(int(tokens[g].min()), int(tokens[g].max())) for g in groups]
    rows = []
    for m in methods:
        scores = np.array([r["scores"][m] for r in records], dtype=np.float64)
        rho = spearmanr(scores, tokens).statistic if np.ptp(scores) > 0 else float("nan")
        rows.append({"method": m, "spearman_with_length": float(rho),
                     "auroc": auroc(scores, correct),
                     "auroc_by_band": [auroc(scores[g], correct[g]) for g in groups]})
    return {"bands": [{"tokens": list(e), "answers": len(g),
                       "wrong_share": float(1.0 - correct[g].mean())}
                      for e, g in zip(edges, groups, strict=True)],
            "length_auroc": auroc(tokens, correct), "methods": rows}
