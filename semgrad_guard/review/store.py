"""The storage seam of the review queue: every backend implements ``ReviewStore``.

The queue holds the rules (validation, callbacks, waiting); a store only has to keep
cases durably and apply a decision atomically: ``decide`` must change a case only if
it is still pending, in one statement, so that concurrent reviewers in any number of
processes see exactly one winner.
"""

from __future__ import annotations

import builtins
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .case import CaseStatus, EscalatedCase, parse_time

#: Columns of the cases table, in the order every backend reads them.
CASE_COLUMNS = (
    "id", "chain", "question", "context", "answer", "score", "components", "rule",
    "metadata", "status", "final_answer", "reviewer", "reason", "created_at", "decided_at",
)


#: Columns of the webhook outbox, in the order every backend reads them.
DELIVERY_COLUMNS = ("id", "case_id", "url", "status", "attempts", "created_at",
                    "next_attempt_at", "delivered_at", "last_error")

DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class Delivery:
    """One webhook notification in the outbox: ``id`` is the delivery id it is signed with."""

    id: str
    case_id: str
    url: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None


def delivery_from_row(row: dict[str, Any]) -> Delivery:
    delivered_at = row["delivered_at"]
    return Delivery(id=row["id"], case_id=row["case_id"], url=row["url"], status=row["status"],
                    attempts=int(row["attempts"]), created_at=parse_time(row["created_at"]),
                    next_attempt_at=parse_time(row["next_attempt_at"]),
                    delivered_at=parse_time(delivered_at) if delivered_at else None,
                    last_error=row["last_error"])


class ReviewStore(ABC):
    """Durable storage for escalated cases.

    Implement this to keep cases somewhere else than SQLite or PostgreSQL, then pass
    the store to ``ReviewQueue(store)``.

    >>> from semgrad_guard.review import ReviewQueue, SQLiteReviewStore
    >>> queue = ReviewQueue(SQLiteReviewStore(":memory:"))
    >>> queue.submit(chain="rag", question="q", answer="a").status
    'pending'
    """

    #: A display form of where the cases live (no password).
    location: str = ""

    @abstractmethod
    def add(self, case: EscalatedCase) -> None:
        """Store a new case durably; when this returns, the case survives a crash."""

    @abstractmethod
    def get(self, case_id: str) -> EscalatedCase | None:
        """The case with that id, or ``None``."""

    @abstractmethod
    def list(self, status: CaseStatus | None, chain: str | None, limit: int) -> list[EscalatedCase]:
        """Cases oldest first (a queue is worked from the front), filtered."""

    def ids_starting_with(self, prefix: str, limit: int) -> builtins.list[str]:
        """Up to ``limit`` case ids that start with ``prefix``, oldest case first.

        This default reads every case; the SQLite and PostgreSQL stores ask the database.
        """
        from .queue import MAX_LIST

        return [case.id for case in self.list(None, None, MAX_LIST)
                if case.id.startswith(prefix)][:limit]

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """How many cases have each status."""

    @abstractmethod
    def decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
               reviewer: str | None, reason: str | None, decided_at: datetime,
               deliveries: Sequence[tuple[str, str]] = ()) -> EscalatedCase | None:
        """Record a decision if, and only if, the case is still pending.

        ``deliveries`` are ``(delivery id, url)`` webhook notifications to put in the
        outbox in the same transaction, so that a decision and its notification are
        recorded together or not at all. Returns the decided case, or ``None`` when no
        pending case has that id (the queue then finds out whether it is missing or
        already decided).
        """

    # -- the webhook outbox ------------------------------------------------------------
    @abstractmethod
    def claim_deliveries(self, url: str, now: datetime, lease_until: datetime,
                         limit: int) -> builtins.list[Delivery]:
        """Pending deliveries to ``url`` that are due and not leased by another sender;
        each is leased until ``lease_until`` and its attempt counted, atomically."""

    @abstractmethod
    def finish_delivery(self, delivery_id: str, status: DeliveryStatus, *, error: str | None,
                        at: datetime, retry_at: datetime | None = None) -> None:
        """Record an attempt's outcome: ``delivered``, ``failed`` for good, or ``pending``
        again (then ``retry_at`` is when to try next)."""

    @abstractmethod
    def deliveries(self, status: DeliveryStatus | None = None,
                   limit: int = 1000) -> builtins.list[Delivery]:
        """Outbox rows, oldest first."""

    # -- retention ---------------------------------------------------------------------
    @abstractmethod
    def purge(self, before: datetime, include_pending: bool) -> int:
        """Delete cases decided (or, with ``include_pending``, escalated) before
        ``before``, with their outbox rows; returns how many cases were deleted."""

    # -- review-page sessions ----------------------------------------------------------
    @abstractmethod
    def add_session(self, key: str, reviewer: str, created_at: datetime,
                    expires_at: datetime) -> None:
        """Remember a review-page login; ``key`` is a hash of the session's secret."""

    @abstractmethod
    def session_reviewer(self, key: str, now: datetime) -> str | None:
        """The reviewer of a live (not revoked, not expired) session, else ``None``."""

    @abstractmethod
    def revoke_sessions(self, key: str | None, at: datetime) -> int:
        """End one session (``key``) or all of them (``None``); returns how many."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""


def case_from_row(row: dict[str, Any]) -> EscalatedCase:
    """Build a case from a row; JSON columns may arrive as text (SQLite) or objects."""

    def as_json(value: Any, empty: Any) -> Any:
        if value is None:
            return empty
        return json.loads(value) if isinstance(value, str | bytes) else value

    decided_at = row["decided_at"]
    return EscalatedCase(
        id=row["id"],
        chain=row["chain"],
        question=row["question"],
        answer=row["answer"],
        score=row["score"],
        components=as_json(row["components"], {}),
        context=as_json(row["context"], []),
        rule=row["rule"],
        metadata=as_json(row["metadata"], {}),
        status=row["status"],
        final_answer=row["final_answer"],
        reviewer=row["reviewer"],
        reason=row["reason"],
        created_at=parse_time(row["created_at"]),
        decided_at=parse_time(decided_at) if decided_at is not None else None,
    )


def to_json(value: Any) -> str:
    """Strict JSON (NaN and infinities refused) that keeps non-ASCII text readable."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
