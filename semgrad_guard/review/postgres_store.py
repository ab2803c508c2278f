"""Cases in a PostgreSQL database, for deployments where several hosts escalate."""

from __future__ import annotations

import builtins
import os
import re
import threading
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, ReviewStoreError
from .case import CaseStatus, EscalatedCase
from .store import CASE_COLUMNS, ReviewStore, case_from_row, to_json

T = TypeVar("T")

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresReviewStore(ReviewStore):
    """Cases in a PostgreSQL table (``semgrad_review_cases`` unless told otherwise).

    Needs ``psycopg`` 3 (``pip install "psycopg[binary]"``). The table and its indexes
    are created on first use, under an advisory lock so that many processes can start
    at once. Every write commits before returning; a dropped connection is reopened
    once per call (adds are idempotent, so a retried add cannot duplicate a case).

    >>> store = PostgresReviewStore("postgresql://reviewer@127.0.0.1:5432/guard")  # doctest: +SKIP
    >>> store.counts()["pending"]  # doctest: +SKIP
    0
    """

    def __init__(self, url: str, *, table: str = "semgrad_review_cases",
                 connect_timeout: float = 10.0) -> None:
        if not _TABLE_NAME.match(table):
            raise ConfigError(f"table {table!r}: use letters, digits and _ (at most 63)")
        try:
            import psycopg
            from psycopg import sql
            from psycopg.rows import dict_row
        except ModuleNotFoundError as exc:
            raise ReviewStoreError(
                'a PostgreSQL review queue needs psycopg 3: pip install "psycopg[binary]"'
            ) from exc
        self._psycopg = psycopg
        self._dict_row = dict_row
        self._url = re.sub(r"^postgres(ql)?\+psycopg2?://", "postgresql://", url)
        self.location = _without_password(self._url)
        self._connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._closed = False
        name = sql.Identifier(table)
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in CASE_COLUMNS)
        self._lock_key = zlib.crc32(f"semgrad-guard:{table}".encode())
        self._schema = [
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
                seq          BIGSERIAL,
                id           TEXT PRIMARY KEY,
                chain        TEXT NOT NULL,
                question     TEXT NOT NULL,
                context      JSONB NOT NULL,
                answer       TEXT NOT NULL,
                score        DOUBLE PRECISION,
                components   JSONB NOT NULL,
                rule         TEXT,
                metadata     JSONB NOT NULL,
                status       TEXT NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'approved', 'edited', 'rejected')),
                final_answer TEXT,
                reviewer     TEXT,
                reason       TEXT,
                created_at   TIMESTAMPTZ NOT NULL,
                decided_at   TIMESTAMPTZ)""").format(name),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (status, created_at)").format(
                sql.Identifier(f"{table}_status_created"), name),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (chain, status, created_at)").format(
                sql.Identifier(f"{table}_chain_status_created"), name),
        ]
        self._insert = sql.SQL(
            "INSERT INTO {} (id, chain, question, context, answer, score, components, rule,"
            " metadata, status, created_at) VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s::jsonb,"
            " %s, %s::jsonb, %s, %s) ON CONFLICT (id) DO NOTHING").format(name)
        self._select = sql.SQL("SELECT {} FROM {}").format(columns, name)
        self._count = sql.SQL("SELECT status, COUNT(*) AS n FROM {} GROUP BY status").format(name)
        self._update = sql.SQL(
            "UPDATE {} SET status = %s, final_answer = %s, reviewer = %s, reason = %s,"
            " decided_at = %s WHERE id = %s AND status = 'pending' RETURNING {}").format(
                name, columns)
        self._sql = sql
        self._run(lambda conn: None)

    def _connection(self) -> Any:
        if self._closed:
            raise ReviewStoreError(f"the review queue {self.location} is closed")
        if self._conn is not None and not self._conn.closed and self._pid == os.getpid():
            return self._conn
        conn = self._psycopg.connect(self._url, autocommit=True, row_factory=self._dict_row,
                                     connect_timeout=max(1, int(self._connect_timeout)))
        with conn.transaction():
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            for statement in self._schema:
                conn.execute(statement)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _run(self, work: Callable[[Any], T]) -> T:
        psycopg = self._psycopg
        with self._lock:
            for attempt in (1, 2):
                try:
                    return work(self._connection())
                except psycopg.OperationalError as exc:
                    broken = self._conn is None or self._conn.closed or self._conn.broken
                    if attempt == 2 or not broken:
                        raise ReviewStoreError(
                            f"review queue {self.location}: {exc}".strip()) from exc
                    self._conn = None
                except psycopg.Error as exc:
                    raise ReviewStoreError(f"review queue {self.location}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def add(self, case: EscalatedCase) -> None:
        params = (case.id, case.chain, case.question, to_json(case.context), case.answer,
                  case.score, to_json(case.components), case.rule, to_json(case.metadata),
                  case.status, case.created_at)
        self._run(lambda conn: conn.execute(self._insert, params))

    def get(self, case_id: str) -> EscalatedCase | None:
        query = self._sql.SQL("{} WHERE id = %s").format(self._select)
        row = self._run(lambda conn: conn.execute(query, (case_id,)).fetchone())
        return case_from_row(row) if row else None

    def list(self, status: CaseStatus | None, chain: str | None, limit: int
             ) -> builtins.list[EscalatedCase]:
        sql = self._sql
        where: builtins.list[Any] = []
        params: builtins.list[Any] = []
        if status is not None:
            where.append(sql.SQL("status = %s"))
            params.append(status)
        if chain is not None:
            where.append(sql.SQL("chain = %s"))
            params.append(chain)
        clause = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        query = sql.SQL("{}{} ORDER BY created_at, seq LIMIT %s").format(self._select, clause)
        rows = self._run(lambda conn: conn.execute(query, (*params, limit)).fetchall())
        return [case_from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._run(lambda conn: conn.execute(self._count).fetchall())
        found = {row["status"]: int(row["n"]) for row in rows}
        return {status: found.get(status, 0)
                for status in ("pending", "approved", "edited", "rejected")}

    def decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
               reviewer: str | None, reason: str | None,
               decided_at: datetime) -> EscalatedCase | None:
        params = (status, final_answer, reviewer, reason, decided_at, case_id)
        row = self._run(lambda conn: conn.execute(self._update, params).fetchone())
        return case_from_row(row) if row else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True
