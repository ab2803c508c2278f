"""A JSONL file of labelled answers, resumable: a header line with the settings that
made them, then one :class:`~semgrad_guard.calibration.labelling.LabelledScore` a line,
appended and flushed batch by batch."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .labelling import LabelledScore


class LabelledAnswersFile:
    """Labelled answers saved at ``path`` under ``settings`` (data, split, model, ...).

    Answers saved with other settings are not reused: :meth:`saved` returns none of
    them, and :meth:`start` begins the file again.
    """

    def __init__(self, path: str | os.PathLike[str], settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = settings

    def saved(self) -> list[LabelledScore]:
        """The answers saved with these settings (none if the file has others)."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
            if header.get("settings") != self.settings:
                print(f"{self.path} was made with other settings; answering again",
                      file=sys.stderr)
                return []
            # A run cut short may leave half a line at the end: drop it.
            rows = []
            for line in lines[1:]:
                try:
                    rows.append(LabelledScore(**json.loads(line)))
                except json.JSONDecodeError:
                    continue
            return rows
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.path}: not a labelled-answers file ({exc})") from exc

    def resume(self) -> list[LabelledScore]:
        """The answers saved with these settings; when there are none, the file is begun
        again (:meth:`start`) for the new answers to be appended to."""
        saved = self.saved()
        if not saved:
            self.start()
        return saved

    def start(self) -> None:
        """Begin the file: the settings line alone."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")

    def append(self, rows: list[LabelledScore]) -> None:
        """Add a batch of answers and put it on disk before returning."""
        with self.path.open("a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(asdict(row)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
