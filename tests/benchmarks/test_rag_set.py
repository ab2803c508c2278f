"""The RAG-style set's builder on a small hand-made pool (no embedding model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semgrad_bench.rag_set import PASSAGES, build, check_rag_set, passage, reworded
from semgrad_guard.calibration.datasets import QAItem
from semgrad_guard.errors import ConfigError


def _pool() -> tuple[list[QAItem], np.ndarray]:
    items = [QAItem(f"What is thing number {i}?", [f"answer{i}"],
                    [f"Which item carries the label {i}?", f"What is thing {i} called?"], 300 + i)
             for i in range(12)]
    # Item 1 shares item 0's answer (a near duplicate the builder must skip); item 2's
    # question is a near copy of item 0's (cosine 0.95).
    items[1] = QAItem("What is thing number 1?", ["answer0"], [], 301)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(12, 8))
    v[2] = v[0] + 0.1 * rng.normal(size=8)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return items, v


def test_reworded_takes_the_least_overlapping_paraphrase():
    assert reworded("What is the capital of France?",
                    ["What is the capital city of France?", "Which city governs France?"]) \
        == "Which city governs France?"
    assert reworded("Why?", []) == "Why?"
    assert passage(QAItem("Q?", ["darwin"], ["Who came up with it?"])) == \
        "Who came up with it? Darwin."


def test_items_answerable_or_not_with_near_duplicates_skipped():
    pool, vectors = _pool()
    items = build(pool, "sciq", "evaluation", 12, 0, vectors)
    assert len(items) == 12
    assert sum(it["answerable"] for it in items) == 6  # half of the split
    for i, it in enumerate(items):
        assert len(it["passages"]) == PASSAGES
        own = pool[i].index
        if it["answerable"]:
            assert it["passages"][it["gold_position"]] == own
            assert passage(pool[i]) in it["query"]
        else:
            assert own not in it["passages"] and it["gold_position"] is None
        assert it["query"].endswith(pool[i].question)
        assert it["source_index"] == own
    # Item 0: item 1 has its answer, item 2 is a near-copy question: neither is a distractor.
    assert not {301, 302} & set(items[0]["passages"])


def test_build_is_deterministic_and_prefix_stable():
    pool, vectors = _pool()
    a = build(pool, "sciq", "evaluation", 12, 0, vectors)
    assert a == build(pool, "sciq", "evaluation", 12, 0, vectors)
    assert build(pool, "sciq", "evaluation", 5, 0, vectors) == a[:5]
    assert build(pool, "truthfulqa", "evaluation", 12, 0, vectors) != a


def test_check_refuses_a_changed_or_missing_file(tmp_path):
    (tmp_path / "rag-calibration").mkdir()
    f = tmp_path / "rag-calibration" / "sciq.jsonl"
    f.write_text(json.dumps({"query": "q"}) + "\n")
    import hashlib

    manifest = {"files": {"rag-calibration/sciq.jsonl": {
        "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}}}
    check_rag_set(tmp_path, manifest)
    f.write_text("changed\n")
    with pytest.raises(ConfigError, match="differs"):
        check_rag_set(tmp_path, manifest)
    f.unlink()
    with pytest.raises(ConfigError, match="missing"):
        check_rag_set(tmp_path, manifest)
