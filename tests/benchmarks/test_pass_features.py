"""The features command's scoring on a tiny random model: what it stores is the scorer's
own features, it resumes without duplicating, and it packs the report's features file."""

from __future__ import annotations

import json

import pytest

from semgrad_bench.feature_sets import load_set
from semgrad_bench.pass_features import features_of_questions, features_of_run, make_scorer
from semgrad_guard.calibration.judges import ContainmentJudge
from tests.core.tiny import tiny_local_model

LAYERS = (2, 3)


def _run_folder(lm, folder):
    folder.mkdir()
    answers = [("what is the color of the sky ?", "blue"), ("who wrote paris ?", "the sun"),
               ("how many cat ?", "three")]
    rows = [{"index": 300 + i, "correct": i != 1, "scores": {"p_true": 0.1 * i},
             "prompt_ids": lm.prompt_ids(q), "response_ids": lm.response_ids(a)}
            for i, (q, a) in enumerate(answers)]
    (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_features_of_a_run_are_the_scorers_and_resume(tmp_path):
    lm = tiny_local_model()
    rows = _run_folder(lm, tmp_path / "run")
    path = features_of_run(lm, tmp_path / "run", "sciq-evaluation", "sciq", tmp_path / "f",
                           stored=["p_true"], layers=LAYERS)
    s = load_set(path.parent, "sciq-evaluation")
    direct = make_scorer(lm, LAYERS).score_batch([(r["prompt_ids"], r["response_ids"])
                                                  for r in rows])
    assert s.names == list(direct[0].features)
    for k, score in enumerate(direct):
        assert s.features[k].tolist() == pytest.approx(list(score.features.values()), rel=1e-5)
    assert s.correct.tolist() == [True, False, True]
    assert s.stored["p_true"].tolist() == pytest.approx([0.0, 0.1, 0.2])
    assert "grad_l2/-1/3" in s.names and "nll_per_token" in s.names
    # A second run finds every answer done and adds nothing.
    features_of_run(lm, tmp_path / "run", "sciq-evaluation", "sciq", tmp_path / "f",
                    layers=LAYERS)
    lines = (tmp_path / "f" / "sciq-evaluation.answers.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_features_of_questions_generate_judge_and_score(tmp_path):
    lm = tiny_local_model()
    items = [{"query": "Context:\nthe sky is blue .\n\nwhat is the color of the sky ?",
              "question": "what is the color of the sky ?", "truthful answer": ["blue"],
              "source_index": 300 + i, "source_dataset": "sciq", "answerable": True}
             for i in range(2)]
    q = tmp_path / "sciq.jsonl"
    q.write_text("".join(json.dumps(it) + "\n" for it in items))
    path = features_of_questions(lm, q, "rag-evaluation", "rag-sciq", tmp_path / "f",
                                 judge=ContainmentJudge(), layers=LAYERS)
    s = load_set(path.parent, "rag-evaluation")
    assert len(s) == 2 and set(s.population) == {"rag-sciq"}
    records = [json.loads(line) for line in
               (tmp_path / "f" / "rag-evaluation.answers.jsonl").read_text().splitlines()]
    for r in records:
        assert r["correct"] == ContainmentJudge().is_correct(r["answer"], ["blue"])
        rescored = make_scorer(lm, LAYERS).score_batch([(r["prompt_ids"], r["response_ids"])])
        assert r["features"]["nll"] == pytest.approx(rescored[0].features["nll"], rel=1e-5)
