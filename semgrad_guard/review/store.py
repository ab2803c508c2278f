"""The storage seam of the review queue: every backend implements ``ReviewStore``.

The queue holds the rules (validation, callbacks, waiting); a store only has to keep
cases durably and apply a decision atomically: ``decide`` must change a case only if
it is still pending, in one statement, so that concurrent reviewers in any number of
processes see exactly one winner.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from .case import CaseStatus, EscalatedCase, parse_time

#: Columns of the cases table, in the order every backend reads them.
CASE_COLUMNS = (
    "id", "chain", "question", "context", "answer", "score", "components", "rule",
    "metadata", "status", "final_answer", "reviewer", "reason", "created_at", "decided_at",
)


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

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """How many cases have each status."""

    @abstractmethod
    def decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
               reviewer: str | None, reason: str | None,
               decided_at: datetime) -> EscalatedCase | None:
        """Record a decision if, and only if, the case is still pending.

        Returns the decided case, or ``None`` when no pending case has that id (the
        queue then finds out whether it is missing or already decided).
        """

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
