"""A benchmark run on a tiny random model: records, resuming, summary files."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from semgrad_bench.metrics import auroc
from semgrad_bench.report import summarize
from semgrad_bench.runner import BenchmarkRun, RunConfig, read_records
from semgrad_guard.calibration.datasets import QAItem
from semgrad_guard.calibration.judges import ContainmentJudge
from semgrad_guard.errors import ConfigError
from tests.calibration.fakes import HashEncoder
from tests.core.tiny import tiny_local_model

ITEMS = [QAItem("what is the color of the sky ?", ["blue"], [], 300 + i) for i in range(2)] + [
    QAItem("who wrote the sun ?", ["moon"], [], 302),
    QAItem("how many cat ?", ["one"], [], 303),
    QAItem("where is paris ?", ["country"], [], 304),
]


@pytest.fixture(autouse=True)
def _no_cached_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(tmp_path / "cache"))


def _run(out_dir, max_batches=None, **config):
    lm = tiny_local_model()
    cfg = RunConfig(dataset="tiny", split="evaluation", model="tiny-llama", max_new_tokens=6,
                    sample_max_new_tokens=4, batch_size=2, **config)
    return BenchmarkRun(lm, ITEMS, ContainmentJudge(), cfg, out_dir, encoder=HashEncoder(),
                        progress=False).run(max_batches=max_batches)


def _table(records):
    """Everything but the wall-clock times."""
    return [{k: v for k, v in r.items() if k != "times"} for r in records]


def test_interrupted_run_resumes_to_the_same_table(tmp_path):
    whole = _run(tmp_path / "whole")
    partial = _run(tmp_path / "resumed", max_batches=1)
    assert [r["index"] for r in partial] == [300, 301]
    # A run killed mid-write leaves a torn last line; it is dropped and redone.
    with (tmp_path / "resumed" / "answers.jsonl").open("a") as f:
        f.write('{"index": 302, "quest')
    lines = (tmp_path / "resumed" / "answers.jsonl").read_text().splitlines()
    (tmp_path / "resumed" / "answers.jsonl").write_text("\n".join(lines[:2]) + "\n")
    resumed = _run(tmp_path / "resumed")
    assert [r["index"] for r in resumed] == [300, 301, 302, 303, 304]
    assert _table(resumed) == _table(whole)


def test_records_hold_every_method_and_its_time(tmp_path):
    record = _run(tmp_path / "run", max_batches=1)[0]
    expected = {"semgrad_default", "hybridgrad_default", "nll", "nll_per_token",
                "mean_entropy", "max_prob", "p_true", "semantic_entropy_k5",
                "semantic_entropy_k10", "lexical_similarity_k5", "lexical_similarity_k10",
                "eigenscore_k5", "eigenscore_k10"}
    assert set(record["scores"]) == expected  # no cached profile: default anchor only
    assert expected <= set(record["times"]) and record["times"]["generation"] > 0
    assert len(record["samples"]) == 10
    assert isinstance(record["correct"], bool)


def test_embedding_judge_records_its_similarity_from_one_encoding(tmp_path):
    from semgrad_guard.calibration.judges import EmbeddingJudge

    class CountingEncoder(HashEncoder):
        calls = 0

        def encode(self, texts, **kwargs):
            CountingEncoder.calls += 1
            return super().encode(texts, **kwargs)

    judge = EmbeddingJudge(threshold=0.5, encoder=CountingEncoder())
    cfg = RunConfig(dataset="tiny", split="evaluation", model="tiny-llama", max_new_tokens=6,
                    batch_size=2, methods=("likelihood",), judge="embedding")
    records = BenchmarkRun(tiny_local_model(), ITEMS[:2], judge, cfg, tmp_path / "run",
                           progress=False).run()
    assert CountingEncoder.calls == 2  # one encoding per answer judged
    for r in records:
        assert r["correct"] == (r["judge_similarity"] >= 0.5)


def test_resuming_with_other_settings_is_refused(tmp_path):
    _run(tmp_path / "run", max_batches=1, methods=("likelihood",))
    with pytest.raises(ConfigError, match="other settings"):
        _run(tmp_path / "run", methods=("likelihood", "p_true"))


def test_a_run_timed_on_another_device_is_not_resumed(tmp_path):
    _run(tmp_path / "run", max_batches=1, methods=("likelihood",))
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["device"] == "cpu" and config["hardware"].startswith("CPU")
    config["device"] = "cuda"
    (tmp_path / "run" / "run.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="timed on cuda, not cpu"):
        _run(tmp_path / "run", methods=("likelihood",))


def _label_alternately(run_dir, records):
    """Both classes among the answers, whatever the random model said (an empty answer
    stays wrong); the run folder is rewritten with these labels."""
    for i, r in enumerate(records):
        r["correct"] = i % 2 == 0 and not r.get("no_answer")
    (run_dir / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_files(tmp_path):
    _run(tmp_path / "run", methods=("semgrad", "likelihood"))
    _label_alternately(tmp_path / "run", read_records(tmp_path / "run"))
    rows = summarize(tmp_path / "run", resamples=20, plots=True)
    # Every question answered: no all-questions column, the same figure either way.
    assert all(r["auroc_all"] == pytest.approx(r["auroc"]) for r in rows)
    text = (tmp_path / "run" / "summary.md").read_text()
    assert "0 of 5 questions (0%) without an answer" in text and "AUROC, all" not in text
    assert {r["method"] for r in rows} >= {"semgrad_default", "nll"}
    for name in ("summary.csv", "summary.md", "summary.json", "answers.csv", "roc.png",
                 "risk_coverage.png"):
        assert (tmp_path / "run" / name).is_file()
    costs = {r["method"]: r["cost_vs_generation"] for r in rows}
    assert costs["semgrad_default"] > costs["nll"] > 0
    assert costs["answer_length"] == 0.0  # a free reference
    assert "semgrad_sum" not in costs  # no calibrated anchor, so no calibrated SemGrad


class _Mute(LogitsProcessor):
    """Ends the marked rows' answers before they begin (their first token is the
    end-of-turn token)."""

    def __init__(self, rows: torch.Tensor, eos: int) -> None:
        self.rows, self.eos = rows, eos

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[self.rows] = float("-inf")
        scores[self.rows, self.eos] = 0.0
        return scores


def _mute_on(lm, word):
    """The model gives no answer to questions holding ``word``."""
    generate_batch = lm.generate_batch

    def muted(prompts, **kwargs):
        rows = torch.tensor([word in p.question for p in prompts])
        rows = rows.repeat_interleave(int(kwargs.get("num_return_sequences", 1)))
        kwargs["logits_processor"] = LogitsProcessorList([_Mute(rows, lm.tokenizer.eos_token_id)])
        return generate_batch(prompts, **kwargs)

    lm.generate_batch = muted
    return lm


def test_empty_answers_are_recorded_apart_and_never_scored(tmp_path):
    lm = _mute_on(tiny_local_model(), "cat")
    cfg = RunConfig(dataset="tiny", split="evaluation", model="tiny-llama", max_new_tokens=6,
                    batch_size=2, methods=("semgrad", "likelihood", "p_true"))
    records = BenchmarkRun(lm, ITEMS, ContainmentJudge(), cfg, tmp_path / "run",
                           progress=False).run()
    empty = [r for r in records if r["no_answer"]]
    assert [r["index"] for r in empty] == [303]
    assert empty[0]["scores"] == {} and empty[0]["correct"] is False
    assert empty[0]["answer"] == "" and empty[0]["stop_reason"] == "eos"
    assert all(set(r["scores"]) >= {"semgrad_default", "nll", "p_true"}
               for r in records if not r["no_answer"])
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["prompt_format"] == {"kind": "chat",
                                       "fingerprint": lm.prompt_format.fingerprint(lm.tokenizer)}

    _label_alternately(tmp_path / "run", records)
    rows = {r["method"]: r for r in summarize(tmp_path / "run", resamples=20, plots=False)}
    answered = [r for r in records if not r["no_answer"]]
    nll = [r["scores"]["nll"] for r in answered]
    assert rows["nll"]["auroc"] == pytest.approx(auroc(nll, [r["correct"] for r in answered]))
    # Over every question the empty answer (wrong) ranks above every answer.
    everything = [r["scores"]["nll"] if not r["no_answer"] else max(nll) + 1 for r in records]
    assert rows["nll"]["auroc_all"] == pytest.approx(
        auroc(everything, [r["correct"] for r in records]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["meta"]
    assert (summary["questions"], summary["answers"], summary["no_answer"]) == (5, 4, 1)
    assert summary["no_answer_share"] == pytest.approx(0.2)
    text = (tmp_path / "run" / "summary.md").read_text()
    assert "4 answers, 25% wrong (containment judge); 1 of 5 questions (20%) without an " \
           "answer" in text
    assert "| AUROC, all [95% CI] |" in text
    table = (tmp_path / "run" / "answers.csv").read_text().splitlines()
    assert len(table) == 6 and ",True," in next(line for line in table if "how many cat" in line)


def test_anchor_sweep_and_rejudge_on_stored_answers(tmp_path):
    from semgrad_bench.analysis import anchor_sweep, rejudge

    records = _run(tmp_path / "run", methods=("semgrad", "likelihood"))
    for i, r in enumerate(records):
        r["correct"] = i % 2 == 0
    rows = anchor_sweep(tiny_local_model(), records, [-1, -2], progress=False)
    assert [r["offset"] for r in rows] == [-1, -2]
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    again = rejudge(records, ContainmentJudge(), ["nll"])
    assert again["judge"] == "containment" and set(again["auroc"]) == {"nll"}


def test_length_effect_separates_length_from_correctness():
    from semgrad_bench.analysis import length_effect

    # Six answers of lengths 1..6. "short" ranks every answer by length alone; "inside"
    # finds the wrong answer inside each band of two but falls with length across bands.
    correct = [True, False, True, False, True, False]
    records = [{"answer_tokens": t, "correct": c,
                "scores": {"short": float(-t), "inside": float(10 * (3 - (t - 1) // 2)
                                                               + (0 if c else 1))}}
               for t, c in zip(range(1, 7), correct, strict=True)]
    out = length_effect(records, ["short", "inside"], bands=3)
    assert [b["tokens"] for b in out["bands"]] == [[1, 2], [3, 4], [5, 6]]
    assert [b["wrong_share"] for b in out["bands"]] == [0.5, 0.5, 0.5]
    assert out["length_auroc"] == pytest.approx(2 / 3)  # wrong answers are the even lengths
    rows = {r["method"]: r for r in out["methods"]}
    assert rows["short"]["spearman_with_length"] == pytest.approx(-1.0)
    assert rows["short"]["auroc_by_band"] == [0.0, 0.0, 0.0]
    assert rows["inside"]["auroc_by_band"] == [1.0, 1.0, 1.0]
    assert rows["inside"]["auroc"] == pytest.approx(6 / 9)  # pooled, it looks weaker


def test_length_effect_band_with_one_class_is_nan():
    import math

    from semgrad_bench.analysis import length_effect

    records = [{"answer_tokens": t, "correct": t > 2, "scores": {"s": float(t)}}
               for t in range(1, 5)]
    out = length_effect(records, ["s"], bands=2)
    assert all(math.isnan(v) for v in out["methods"][0]["auroc_by_band"])
