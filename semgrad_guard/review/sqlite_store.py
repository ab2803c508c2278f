"""The embedded default store: one SQLite file in WAL mode, no server needed."""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ReviewStoreError
from .case import CaseStatus, EscalatedCase
from .store import CASE_COLUMNS, ReviewStore, case_from_row, to_json

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id           TEXT PRIMARY KEY,
    chain        TEXT NOT NULL,
    question     TEXT NOT NULL,
    context      TEXT NOT NULL,
    answer       TEXT NOT NULL,
    score        REAL,
    components   TEXT NOT NULL,
    rule         TEXT,
    metadata     TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'edited', 'rejected')),
    final_answer TEXT,
    reviewer     TEXT,
    reason       TEXT,
    created_at   TEXT NOT NULL,
    decided_at   TEXT
);
CREATE INDEX IF NOT EXISTS cases_status_created ON cases (status, created_at);
CREATE INDEX IF NOT EXISTS cases_chain_status_created ON cases (chain, status, created_at);
"""

_SELECT = f"SELECT {', '.join(CASE_COLUMNS)} FROM cases"


def _time_text(moment: datetime) -> str:
    # A fixed-width UTC form, so that text order is time order in ORDER BY.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class SQLiteReviewStore(ReviewStore):
    """Cases in one SQLite file, safe for many threads and processes at once.

    WAL mode lets reviewers read while escalations write; ``synchronous=FULL`` makes
    every returned ``add`` or ``decide`` survive a crash of the process (and of the
    machine); writes take the write lock up front (``BEGIN IMMEDIATE``) and wait up
    to ``busy_timeout`` seconds for other writers instead of failing.

    >>> store = SQLiteReviewStore(":memory:")
    >>> store.counts()
    {'pending': 0, 'approved': 0, 'edited': 0, 'rejected': 0}
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        self.location = f"sqlite:///{self.path}"
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        # A connection inherited through fork() shares file locks with the parent;
        # a child process opens its own instead.
        if self._closed:
            raise ReviewStoreError(f"the review queue {self.path} is closed")
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            raise ReviewStoreError(f"cannot open the review queue {self.path}: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise ReviewStoreError(
                    f"the review queue has schema version {version}; this semgrad-guard "
                    f"reads up to {_SCHEMA_VERSION}: upgrade semgrad-guard")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _run(self, sql: str, params: tuple[Any, ...] = (), *, write: bool = False
             ) -> list[sqlite3.Row]:
        with self._lock:
            conn = self._connection()
            try:
                if not write:
                    return conn.execute(sql, params).fetchall()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute(sql, params).fetchall()
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return rows
            except sqlite3.Error as exc:
                raise ReviewStoreError(f"review queue {self.path}: {exc}") from exc

    def add(self, case: EscalatedCase) -> None:
        self._run(
            "INSERT INTO cases (id, chain, question, context, answer, score, components, rule,"
            " metadata, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case.id, case.chain, case.question, to_json(case.context), case.answer, case.score,
             to_json(case.components), case.rule, to_json(case.metadata), case.status,
             _time_text(case.created_at)),
            write=True)

    def get(self, case_id: str) -> EscalatedCase | None:
        rows = self._run(f"{_SELECT} WHERE id = ?", (case_id,))
        return case_from_row(dict(rows[0])) if rows else None

    def list(self, status: CaseStatus | None, chain: str | None, limit: int
             ) -> builtins.list[EscalatedCase]:
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if chain is not None:
            where.append("chain = ?")
            params.append(chain)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._run(f"{_SELECT}{clause} ORDER BY created_at, rowid LIMIT ?",
                         (*params, limit))
        return [case_from_row(dict(row)) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._run("SELECT status, COUNT(*) FROM cases GROUP BY status")
        found: dict[str, int] = {str(row[0]): int(row[1]) for row in rows}
        return {status: found.get(status, 0)
                for status in ("pending", "approved", "edited", "rejected")}

    def decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
               reviewer: str | None, reason: str | None,
               decided_at: datetime) -> EscalatedCase | None:
        # The status test in the WHERE clause is what makes a decision exactly-once.
        rows = self._run(
            "UPDATE cases SET status = ?, final_answer = ?, reviewer = ?, reason = ?,"
            f" decided_at = ? WHERE id = ? AND status = 'pending' RETURNING {', '.join(CASE_COLUMNS)}",
            (status, final_answer, reviewer, reason, _time_text(decided_at), case_id),
            write=True)
        return case_from_row(dict(rows[0])) if rows else None

    def integrity_check(self) -> str:
        """SQLite's own consistency check of the file: ``'ok'`` when intact."""
        return str(self._run("PRAGMA integrity_check")[0][0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True
