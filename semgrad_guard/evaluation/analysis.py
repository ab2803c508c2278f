"""Follow-up questions on a finished run, answered from its stored records.

- ``anchor_sweep``: SemGrad's AUROC at every anchor offset of the prompt's template tail,
  re-scoring the stored exact ids (no generation): does the anchor choice explain a
  weak SemGrad?
- ``rejudge``: every method's AUROC under another correctness judge: does the judge?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..model.local_model import LocalModel
from ..scoring.semgrad import SemGradScorer
from .judges import CorrectnessJudge
from .metrics import auroc


def anchor_sweep(lm: LocalModel, records: Sequence[dict[str, Any]], offsets: Sequence[int],
                 batch_size: int = 16) -> list[dict[str, Any]]:
    """AUROC of SemGrad (upper-half layers, no PG) at each offset, on the stored answers."""
    pairs = [(r["prompt_ids"], r["response_ids"]) for r in records]
    correct = [bool(r["correct"]) for r in records]
    rows = []
    for offset in offsets:
        scorer = SemGradScorer(lm, profile=None, anchor_offset=offset, hybrid=False,
                               batch_size=batch_size)
        results = scorer.score_batch(pairs)
        rows.append({"offset": offset, "token": results[0].anchor_token,
                     "layers": list(scorer.anchor.layers),
                     "auroc": auroc([r.scores["semgrad"] for r in results], correct),
                     "seconds_per_answer": sum(r.timings["total"] for r in results) / len(results)})
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
