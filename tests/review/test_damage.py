"""A damaged SQLite file is refused at open, before anything is written to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from semgrad_guard.cli import main
from semgrad_guard.review import ReviewStoreError, open_review_queue


def _damage(path: Path) -> None:
    """Overwrite the middle of a few pages of the cases table, as a bad disk would."""
    raw = sqlite3.connect(path)
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    pages = raw.execute("PRAGMA page_count").fetchone()[0]
    raw.close()
    with open(path, "r+b") as file:
        for page in range(2, pages, 3):
            file.seek(page * page_size + 40)
            file.write(b"\xff" * 200)


def test_a_damaged_file_is_refused_with_what_to_do(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "review.db"
    with open_review_queue(path) as queue:
        for n in range(300):
            queue.submit(chain="c", question=f"question {n} " * 20, answer=f"answer {n}")
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    _damage(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA quick_check").fetchone()[0] != "ok"  # really damaged
    raw.close()
    size = path.stat().st_size

    with pytest.raises(ReviewStoreError, match="damaged") as caught:
        open_review_queue(path)
    assert "restore" in str(caught.value) and str(path) in str(caught.value)
    assert path.stat().st_size == size  # nothing was written into the damaged file
    assert main(["review", "list", "--queue", f"sqlite:///{path}"]) == 2
    assert "damaged" in capsys.readouterr().err
