"""Cases in a PostgreSQL database, for deployments where several hosts escalate."""

from __future__ import annotations

import builtins
import os
import re
import socket
import threading
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, ReviewStoreError
from .case import CaseStatus, EscalatedCase
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

    Nothing waits for ever: connecting gives up after ``connect_timeout`` seconds, the
    server cancels a statement after ``statement_timeout`` seconds, and a server that
    stops answering altogether (hung, or a network that drops packets) has its
    connection cut ``statement_timeout + 2`` seconds into a statement; the call then
    reconnects once and raises ``ReviewStoreError`` if that fails too.

    >>> store = PostgresReviewStore("postgresql://reviewer@127.0.0.1:5432/guard")  # doctest: +SKIP
    >>> store.counts()["pending"]  # doctest: +SKIP
    0
    """

    def __init__(self, url: str, *, table: str = "semgrad_review_cases",
                 connect_timeout: float = 10.0, statement_timeout: float = 15.0) -> None:
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
        if connect_timeout <= 0 or statement_timeout <= 0:
            raise ConfigError("connect_timeout and statement_timeout must be seconds > 0")
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._closed = False
        name = sql.Identifier(table)
        outbox = sql.Identifier(f"{table}_outbox")
        sessions = sql.Identifier(f"{table}_sessions")
        self._outbox, self._sessions, self._cases = outbox, sessions, name
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
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
                seq             BIGSERIAL,
                id              TEXT PRIMARY KEY,
                case_id         TEXT NOT NULL,
                url             TEXT NOT NULL,
                status          TEXT NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
                attempts        INTEGER NOT NULL DEFAULT 0,
                created_at      TIMESTAMPTZ NOT NULL,
                next_attempt_at TIMESTAMPTZ NOT NULL,
                lease_until     TIMESTAMPTZ,
                delivered_at    TIMESTAMPTZ,
                last_error      TEXT)""").format(outbox),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (status, url, next_attempt_at)").format(
                sql.Identifier(f"{table}_outbox_due"), outbox),
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
                key        TEXT PRIMARY KEY,
                reviewer   TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                revoked_at TIMESTAMPTZ)""").format(sessions),
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
                                     connect_timeout=max(1, round(self._connect_timeout)))

        def prepare(conn: Any) -> None:
            milliseconds = str(round(self._statement_timeout * 1000))
            for setting in ("statement_timeout", "lock_timeout",
                            "idle_in_transaction_session_timeout"):
                conn.execute("SELECT set_config(%s, %s, false)", (setting, milliseconds))
            with conn.transaction():
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                for statement in self._schema:
                    conn.execute(statement)

        try:
            self._watched(conn, prepare)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _watched(self, conn: Any, work: Callable[[Any], T]) -> T:
        """Run ``work(conn)``, cutting the connection if the server stops answering."""
        timer = threading.Timer(self._statement_timeout + 2.0, _cut, args=(conn,))
        timer.daemon = True
        timer.start()
        try:
            return work(conn)
        finally:
            timer.cancel()

    def _run(self, work: Callable[[Any], T]) -> T:
        psycopg = self._psycopg
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._watched(self._connection(), work)
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

    def ids_starting_with(self, prefix: str, limit: int) -> builtins.list[str]:
        query = self._sql.SQL("SELECT id FROM {} WHERE starts_with(id, %s)"
                              " ORDER BY created_at, seq LIMIT %s").format(self._cases)
        rows = self._run(lambda conn: conn.execute(query, (prefix, limit)).fetchall())
        return [str(row["id"]) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._run(lambda conn: conn.execute(self._count).fetchall())
        found = {row["status"]: int(row["n"]) for row in rows}
        return {status: found.get(status, 0)
                for status in ("pending", "approved", "edited", "rejected")}

    def decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
               reviewer: str | None, reason: str | None, decided_at: datetime,
               deliveries: Sequence[tuple[str, str]] = ()) -> EscalatedCase | None:
        params = (status, final_answer, reviewer, reason, decided_at, case_id)
        insert = self._sql.SQL(
            "INSERT INTO {} (id, case_id, url, created_at, next_attempt_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING").format(self._outbox)

        def work(conn: Any) -> Any:
            with conn.transaction():
                row = conn.execute(self._update, params).fetchone()
                if row:
                    for delivery_id, url in deliveries:
                        conn.execute(insert, (delivery_id, case_id, url, decided_at,
                                              decided_at))
                return row

        row = self._run(work)
        return case_from_row(row) if row else None

    # -- the webhook outbox ------------------------------------------------------------
    def claim_deliveries(self, url: str, now: datetime, lease_until: datetime,
                         limit: int) -> builtins.list[Delivery]:
        columns = self._sql.SQL(", ").join(self._sql.Identifier(c) for c in DELIVERY_COLUMNS)
        query = self._sql.SQL(
            "UPDATE {table} SET lease_until = %s, attempts = attempts + 1 WHERE id IN ("
            "SELECT id FROM {table} WHERE status = 'pending' AND url = %s AND"
            " next_attempt_at <= %s AND (lease_until IS NULL OR lease_until <= %s)"
            " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {columns}"
        ).format(table=self._outbox, columns=columns)
        rows = self._run(lambda conn: conn.execute(
            query, (lease_until, url, now, now, limit)).fetchall())
        return sorted((delivery_from_row(row) for row in rows), key=lambda d: d.created_at)

    def finish_delivery(self, delivery_id: str, status: DeliveryStatus, *, error: str | None,
                        at: datetime, retry_at: datetime | None = None) -> None:
        query = self._sql.SQL(
            "UPDATE {} SET status = %s, last_error = %s, lease_until = NULL,"
            " delivered_at = %s, next_attempt_at = COALESCE(%s, next_attempt_at)"
            " WHERE id = %s").format(self._outbox)
        params = (status, error, at if status == "delivered" else None, retry_at, delivery_id)
        self._run(lambda conn: conn.execute(query, params))

    def deliveries(self, status: DeliveryStatus | None = None,
                   limit: int = 1000) -> builtins.list[Delivery]:
        columns = self._sql.SQL(", ").join(self._sql.Identifier(c) for c in DELIVERY_COLUMNS)
        where = self._sql.SQL("" if status is None else " WHERE status = %s")
        query = self._sql.SQL("SELECT {} FROM {}{} ORDER BY created_at, seq LIMIT %s").format(
            columns, self._outbox, where)
        params = (limit,) if status is None else (status, limit)
        rows = self._run(lambda conn: conn.execute(query, params).fetchall())
        return [delivery_from_row(row) for row in rows]

    # -- retention ---------------------------------------------------------------------
    def purge(self, before: datetime, include_pending: bool) -> int:
        sql = self._sql
        condition = "(decided_at IS NOT NULL AND decided_at < %s)"
        params: tuple[Any, ...] = (before,)
        if include_pending:
            condition += " OR (status = 'pending' AND created_at < %s)"
            params += (before,)
        outbox = sql.SQL("DELETE FROM {} WHERE case_id IN (SELECT id FROM {} WHERE "
                         + condition + ")").format(self._outbox, self._cases)
        cases = sql.SQL("DELETE FROM {} WHERE " + condition).format(self._cases)

        def work(conn: Any) -> int:
            with conn.transaction():
                conn.execute(outbox, params)
                return int(conn.execute(cases, params).rowcount)

        deleted = self._run(work)
        # Deleted rows stay in the table's pages until a vacuum reclaims them.
        self._run(lambda conn: conn.execute(sql.SQL("VACUUM {}").format(self._cases)))
        return deleted

    # -- review-page sessions ----------------------------------------------------------
    def add_session(self, key: str, reviewer: str, created_at: datetime,
                    expires_at: datetime) -> None:
        sql = self._sql
        expired = sql.SQL("DELETE FROM {} WHERE expires_at < %s").format(self._sessions)
        insert = sql.SQL("INSERT INTO {} (key, reviewer, created_at, expires_at)"
                         " VALUES (%s, %s, %s, %s)").format(self._sessions)

        def work(conn: Any) -> None:
            with conn.transaction():
                conn.execute(expired, (created_at,))
                conn.execute(insert, (key, reviewer, created_at, expires_at))

        self._run(work)

    def session_reviewer(self, key: str, now: datetime) -> str | None:
        query = self._sql.SQL("SELECT reviewer FROM {} WHERE key = %s AND revoked_at IS NULL"
                              " AND expires_at > %s").format(self._sessions)
        row = self._run(lambda conn: conn.execute(query, (key, now)).fetchone())
        return str(row["reviewer"]) if row else None

    def revoke_sessions(self, key: str | None, at: datetime) -> int:
        sql = self._sql
        if key is None:
            query = sql.SQL("UPDATE {} SET revoked_at = %s WHERE revoked_at IS NULL").format(
                self._sessions)
            params: tuple[Any, ...] = (at,)
        else:
            query = sql.SQL("UPDATE {} SET revoked_at = %s WHERE key = %s AND revoked_at IS"
                            " NULL").format(self._sessions)
            params = (at, key)
        return int(self._run(lambda conn: conn.execute(query, params).rowcount))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True


def _cut(conn: Any) -> None:
    """Shut the connection's socket down, so that a call blocked on it returns an error.

    ``shutdown`` acts on the socket itself (the duplicate descriptor shares it), and is
    safe from another thread, unlike closing the connection under psycopg's feet.
    """
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):
        pass
