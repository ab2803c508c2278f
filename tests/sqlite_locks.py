"""Another process holding a SQLite file's locks, for the contention tests."""

from __future__ import annotations

import sqlite3
from typing import Any


def hold_write_lock(path: str, holding: Any, release: Any) -> None:
    """Hold the file's write lock (BEGIN EXCLUSIVE) until ``release`` is set."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    holding.set()
    release.wait(120)
    conn.execute("ROLLBACK")
    conn.close()
