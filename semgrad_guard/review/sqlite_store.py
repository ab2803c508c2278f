"""The embedded default store: one SQLite file in WAL mode, no server needed."""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import ReviewStoreError
from .case import CaseStatus, EscalatedCase
from .files import create_private_file
from .store import (
    CASE_COLUMNS,
    DELIVERY_COLUMNS,
    Delivery,
    DeliveryStatus,
    ReviewStore,
    case_from_row,
    delivery_from_row,
    to_json,
)

T = TypeVar("T")

_SCHEMA_VERSION = 2

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
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              TEXT PRIMARY KEY,
    case_id         TEXT NOT NULL,
    url             TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_until     TEXT,
    delivered_at    TEXT,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (status, url, next_attempt_at);
CREATE TABLE IF NOT EXISTS review_sessions (
    key        TEXT PRIMARY KEY,
    reviewer   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);
"""

_SELECT = f"SELECT {', '.join(CASE_COLUMNS)} FROM cases"
_DELIVERIES = f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM webhook_outbox"


def write_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a transaction that takes the write lock up front (``BEGIN
    IMMEDIATE``, so it never fails half-way on a lock upgrade); commit, or roll back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _time_text(moment: datetime) -> str:
    # A fixed-width UTC form, so that text order is time order in ORDER BY.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class SQLiteReviewStore(ReviewStore):
    """Cases in one SQLite file, safe for many threads and processes at once.

    WAL mode lets reviewers read while escalations write; ``synchronous=FULL`` makes
    every returned ``add`` or ``decide`` survive a crash of the process (and of the
    machine); writes take the write lock up front (``BEGIN IMMEDIATE``) and wait up
    to ``busy_timeout`` seconds for other writers, then raise ``ReviewStoreError``.
    A new file is created with mode 0600; opening a file checks its integrity first
    (``PRAGMA quick_check``), so a damaged file is refused instead of half working;
    deleted rows are overwritten (``secure_delete``).

    >>> store = SQLiteReviewStore(":memory:")
    >>> store.counts()
    {'pending': 0, 'approved': 0, 'edited': 0, 'rejected': 0}
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0,
                 check_integrity: bool = True) -> None:
        self.path = str(path)
        self.location = f"sqlite:///{self.path}"
        self._busy_timeout = busy_timeout
        self._check_integrity = check_integrity
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        if self.path != ":memory:":
            create_private_file(self.path)
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        # A connection inherited through fork() shares file locks with the parent;
        # a child process opens its own instead.
        if self._closed:
            raise ReviewStoreError(f"the review queue {self.path} is closed")
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            if self._check_integrity and self.path != ":memory:":
                problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise ReviewStoreError(
                        f"the review queue {self.path} is damaged ({'; '.join(problems)}); "
                        f"restore it from a backup, or recover what is readable with "
                        f"`sqlite3 {self.path} .recover`")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            self._migrate(conn)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise ReviewStoreError(f"cannot open the review queue {self.path}: "
                                   f"{self._explain(exc)}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return (f"{text}: another program holds the file's write lock (waited "
                    f"{self._busy_timeout:g} s); try again")
        if "malformed" in text or "not a database" in text:
            return f"{text}: the file is damaged; restore it from a backup"
        return text

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
        if write:
            return self._transaction(lambda conn: conn.execute(sql, params).fetchall())
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise ReviewStoreError(f"review queue {self.path}: {self._explain(exc)}") \
                    from exc

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._connection()
            try:
                return write_transaction(conn, work)
            except sqlite3.Error as exc:
                raise ReviewStoreError(f"review queue {self.path}: {self._explain(exc)}") \
                    from exc

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

    def ids_starting_with(self, prefix: str, limit: int) -> builtins.list[str]:
        rows = self._run("SELECT id FROM cases WHERE substr(id, 1, ?) = ?"
                         " ORDER BY created_at, rowid LIMIT ?", (len(prefix), prefix, limit))
        return [str(row[0]) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._run("SELECT status, COUNT(*) FROM cases GROUP BY status")
        found: dict[str, int] = {str(row[0]): int(row[1]) for row in rows}
        return {status: found.get(status, 0)
                for status in ("pending", "approved", "edited", "rejected")}

    def decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
               reviewer: str | None, reason: str | None, decided_at: datetime,
               deliveries: Sequence[tuple[str, str]] = ()) -> EscalatedCase | None:
        def work(conn: sqlite3.Connection) -> builtins.list[sqlite3.Row]:
            # The status test in the WHERE clause is what makes a decision exactly-once.
            rows = conn.execute(
                "UPDATE cases SET status = ?, final_answer = ?, reviewer = ?, reason = ?,"
                f" decided_at = ? WHERE id = ? AND status = 'pending'"
                f" RETURNING {', '.join(CASE_COLUMNS)}",
                (status, final_answer, reviewer, reason, _time_text(decided_at),
                 case_id)).fetchall()
            if rows:
                for delivery_id, url in deliveries:
                    conn.execute(
                        "INSERT INTO webhook_outbox (id, case_id, url, created_at,"
                        " next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                        (delivery_id, case_id, url, _time_text(decided_at),
                         _time_text(decided_at)))
            return rows

        rows = self._transaction(work)
        return case_from_row(dict(rows[0])) if rows else None

    # -- the webhook outbox ------------------------------------------------------------
    def claim_deliveries(self, url: str, now: datetime, lease_until: datetime,
                         limit: int) -> builtins.list[Delivery]:
        rows = self._run(
            "UPDATE webhook_outbox SET lease_until = ?, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM webhook_outbox WHERE status = 'pending' AND url = ?"
            " AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
            " ORDER BY next_attempt_at LIMIT ?)"
            f" RETURNING {', '.join(DELIVERY_COLUMNS)}",
            (_time_text(lease_until), url, _time_text(now), _time_text(now), limit),
            write=True)
        return sorted((delivery_from_row(dict(row)) for row in rows),
                      key=lambda d: d.created_at)

    def finish_delivery(self, delivery_id: str, status: DeliveryStatus, *, error: str | None,
                        at: datetime, retry_at: datetime | None = None) -> None:
        self._run(
            "UPDATE webhook_outbox SET status = ?, last_error = ?, lease_until = NULL,"
            " delivered_at = ?, next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
            (status, error, _time_text(at) if status == "delivered" else None,
             _time_text(retry_at) if retry_at else None, delivery_id), write=True)

    def deliveries(self, status: DeliveryStatus | None = None,
                   limit: int = 1000) -> builtins.list[Delivery]:
        where, params = ("", ()) if status is None else (" WHERE status = ?", (status,))
        rows = self._run(f"{_DELIVERIES}{where} ORDER BY created_at, rowid LIMIT ?",
                         (*params, limit))
        return [delivery_from_row(dict(row)) for row in rows]

    # -- retention ---------------------------------------------------------------------
    def purge(self, before: datetime, include_pending: bool) -> int:
        cutoff = _time_text(before)
        condition = "(decided_at IS NOT NULL AND decided_at < ?)"
        params: tuple[Any, ...] = (cutoff,)
        if include_pending:
            condition += " OR (status = 'pending' AND created_at < ?)"
            params += (cutoff,)

        def work(conn: sqlite3.Connection) -> int:
            conn.execute(f"DELETE FROM webhook_outbox WHERE case_id IN "
                         f"(SELECT id FROM cases WHERE {condition})", params)
            return int(conn.execute(f"DELETE FROM cases WHERE {condition}", params).rowcount)

        deleted = self._transaction(work)
        if self.path != ":memory:":
            # Old page images stay in the write-ahead log until a checkpoint.
            self._run("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    # -- review-page sessions ----------------------------------------------------------
    def add_session(self, key: str, reviewer: str, created_at: datetime,
                    expires_at: datetime) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM review_sessions WHERE expires_at < ?",
                         (_time_text(created_at),))
            conn.execute("INSERT INTO review_sessions (key, reviewer, created_at, expires_at)"
                         " VALUES (?, ?, ?, ?)",
                         (key, reviewer, _time_text(created_at), _time_text(expires_at)))

        self._transaction(work)

    def session_reviewer(self, key: str, now: datetime) -> str | None:
        rows = self._run("SELECT reviewer FROM review_sessions WHERE key = ? AND"
                         " revoked_at IS NULL AND expires_at > ?", (key, _time_text(now)))
        return str(rows[0][0]) if rows else None

    def revoke_sessions(self, key: str | None, at: datetime) -> int:
        if key is None:
            rows = self._run("UPDATE review_sessions SET revoked_at = ? WHERE revoked_at IS NULL"
                             " RETURNING key", (_time_text(at),), write=True)
        else:
            rows = self._run("UPDATE review_sessions SET revoked_at = ? WHERE key = ? AND"
                             " revoked_at IS NULL RETURNING key", (_time_text(at), key),
                             write=True)
        return len(rows)

    def integrity_check(self) -> str:
        """SQLite's own consistency check of the file: ``'ok'`` when intact."""
        return str(self._run("PRAGMA integrity_check")[0][0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True
