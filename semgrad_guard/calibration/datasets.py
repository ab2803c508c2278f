"""Question-answering sets with gold answers: the shipped SciQ and TruthfulQA files, or
any JSONL file with configurable field names.

>>> items = load_qa("sciq", split="evaluation", limit=2)
>>> items[0].index, len(items)
(300, 2)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError

#: Datasets shipped in the shared data folder, by name.
SHIPPED_DATASETS = ("sciq", "truthfulqa")

#: Lines 0..CALIBRATION_LINES-1 are the calibration split; the rest is the evaluation split.
CALIBRATION_LINES = 300

Split = Literal["calibration", "evaluation", "all"]


@dataclass(frozen=True)
class QAItem:
    """One question, its acceptable answers, its rewordings and its line in the file."""

    question: str
    answers: list[str]
    paraphrases: list[str] = field(default_factory=list)
    index: int = 0


def shared_data_dir() -> Path:
    """``$SEMGRAD_GUARD_DATA``, else ``<project root>/../shared/data``."""
    env = os.environ.get("SEMGRAD_GUARD_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def dataset_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The JSONL file a shipped name or a path stands for (paraphrase.jsonl preferred)."""
    name = str(name_or_path)
    if name.lower() in SHIPPED_DATASETS:
        folder = shared_data_dir() / name.lower()
        for filename in ("paraphrase.jsonl", "test.jsonl"):
            if (folder / filename).is_file():
                return folder / filename
        raise ConfigError(f"dataset {name!r}: no paraphrase.jsonl or test.jsonl in {folder}")
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"dataset {name!r} is neither a file nor one of "
                          f"{', '.join(SHIPPED_DATASETS)}")
    return path


def dataset_name(name_or_path: str | os.PathLike[str]) -> str:
    """A short name for reports: the shipped name, else the file's stem."""
    name = str(name_or_path)
    return name.lower() if name.lower() in SHIPPED_DATASETS else Path(name).stem


def load_qa(name_or_path: str | os.PathLike[str], split: Split = "calibration", *,
            question_field: str = "query", answers_field: str = "truthful answer",
            paraphrases_field: str = "paraphrases", limit: int | None = None) -> list[QAItem]:
    """Read a question-answering set.

    ``split`` is ``"calibration"`` (lines 0-299), ``"evaluation"`` (lines 300 on) or
    ``"all"``; ``limit`` keeps the first items of the split. ``index`` is the line number
    in the file, so that results can be traced back. A gold answer given as a string
    becomes a list of one.
    """
    if split not in ("calibration", "evaluation", "all"):
        raise ConfigError(f"split {split!r} is not one of 'calibration', 'evaluation', 'all'")
    path = dataset_path(name_or_path)
    items: list[QAItem] = []
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            if split == "calibration" and index >= CALIBRATION_LINES:
                break
            if split == "evaluation" and index < CALIBRATION_LINES:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}, line {index + 1}: not JSON ({exc})") from exc
            for key in (question_field, answers_field):
                if key not in record:
                    raise ConfigError(f"{path}, line {index + 1}: no field {key!r}; "
                                      f"fields are {sorted(record)}")
            answers = record[answers_field]
            answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
            paraphrases = [str(p) for p in record.get(paraphrases_field) or []]
            items.append(QAItem(str(record[question_field]), answers, paraphrases, index))
            if limit is not None and len(items) >= limit:
                break
    return items
