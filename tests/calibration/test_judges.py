"""The correctness judges and the dataset loader."""

from __future__ import annotations

import json

import pytest

from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.calibration.judges import (
    ContainmentJudge,
    EmbeddingJudge,
    judge_for,
    normalize_answer,
)
from semgrad_guard.errors import ConfigError
from tests.calibration.fakes import HashEncoder


def test_normalize_answer():
    assert normalize_answer("  The Carbon-Dioxide! ") == "carbon dioxide"


@pytest.mark.parametrize(("answer", "gold", "expected"), [
    ("Darwin", ["darwin"], True),
    ("The answer is Charles Darwin.", ["darwin"], True),
    ("dioxide", ["carbon dioxide"], True),          # the answer inside the gold answer
    ("a", ["a cell"], False),                        # too short to count the other way
    ("Darwinism", ["darwin"], False),                # whole words only
    ("", ["darwin"], False),
    ("oxygen", ["carbon dioxide", "oxygen"], True),  # any gold answer
])
def test_containment(answer, gold, expected):
    assert ContainmentJudge().is_correct(answer, gold) is expected


def test_embedding_judge_takes_the_best_gold_answer():
    judge = EmbeddingJudge(threshold=0.99, encoder=HashEncoder())
    assert judge.is_correct("nothing happens", ["you die", "nothing happens"])
    assert not judge.is_correct("you grow a watermelon", ["nothing happens"])
    assert judge.similarity("", ["x"]) == 0.0


def test_judge_for_dataset():
    assert judge_for("truthfulqa").name == "embedding"
    assert judge_for("sciq").name == "containment"


def test_shipped_splits():
    calibration = load_qa("sciq", "calibration")
    evaluation = load_qa("sciq", "evaluation", limit=5)
    assert len(calibration) == 300 and calibration[-1].index == 299
    assert [i.index for i in evaluation] == [300, 301, 302, 303, 304]
    assert evaluation[0].paraphrases and evaluation[0].answers


def test_any_jsonl_with_field_names(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"question {i}", "a": f"answer {i}"})
                              for i in range(3)))
    items = load_qa(path, "all", question_field="q", answers_field="a")
    assert [(i.question, i.answers, i.index) for i in items][1] == ("question 1", ["answer 1"], 1)
    with pytest.raises(ConfigError, match="no field 'query'"):
        load_qa(path, "all")
