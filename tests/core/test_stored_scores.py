"""Scores of stored benchmark answers stay what they were: the exact ids of four answers
of the committed CPU run, scored one at a time on one thread with the shipped profile,
against the values the scoring code gave when they were recorded.

A change to the scoring pass that moves any score by more than float32 rounding fails
here. The values were recorded from a pass started at the anchor; the pass now starts at
the earliest feature offset (-6), whose kernels round differently (by up to 1.8e-6
relative on these answers, 5.6e-6 on others): ``ROUNDING`` (2e-5) allows that and nothing
more, since an anchor one column off moves these scores by over 90%.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from semgrad_guard import ProfileStore, SemGradScorer

from .reference import ROUNDING

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smollm2-135m-instruct"

RECORDED: dict[tuple[str, int], dict[str, float]] = {
    ("sciq-evaluation", 300): {"semgrad": 0.0015685440739616752, "hybridgrad": 0.0012364113936200738, "nll": 6.60746955871582, "mean_entropy": 1.530622959136963, "max_prob": 0.36384743452072144},
    ("sciq-evaluation", 307): {"semgrad": 0.0014050683239474893, "hybridgrad": 0.0011990144848823547, "nll": 7.546072959899902, "mean_entropy": 1.8857885599136353, "max_prob": 0.32692450284957886},
    ("truthfulqa-evaluation", 300): {"semgrad": 0.001925359363667667, "hybridgrad": 0.0017689161468297243, "nll": 12.740099906921387, "mean_entropy": 2.4789395332336426, "max_prob": 0.4799538850784302},
    ("truthfulqa-evaluation", 307): {"semgrad": 0.006202303804457188, "hybridgrad": 0.005663453135639429, "nll": 4.847565650939941, "mean_entropy": 2.4318885803222656, "max_prob": 0.4570479989051819},
}


def _stored(run: str, index: int) -> dict[str, Any]:
    for line in (RUN / run / "answers.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["index"] == index:
            return record
    raise LookupError(f"no answer {index} in {run}")


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.real_model
@pytest.mark.parametrize(("run", "index"), list(RECORDED))
def test_stored_answers_score_as_recorded(default_lm: Any, tmp_path: Path, one_thread: None,
                                          run: str, index: int) -> None:
    # An empty user store: the shipped profile of the default model decides the anchor.
    scorer = SemGradScorer(default_lm, profile_store=ProfileStore(tmp_path))
    assert scorer.anchor.source == "profile" and scorer.anchor.offset == -1
    record = _stored(run, index)
    score = scorer.score_batch([(record["prompt_ids"], record["response_ids"])])[0]
    for name, value in RECORDED[(run, index)].items():
        assert score.scores[name] == pytest.approx(value, rel=ROUNDING, abs=0), name
