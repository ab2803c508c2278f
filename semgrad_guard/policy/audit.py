"""The audit trail: every decision the guard makes, in a SQLite file a user can query."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .decision import GuardDecision

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    chain TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT,
    chosen_answer TEXT,
    action TEXT NOT NULL,
    passed INTEGER NOT NULL,
    method TEXT,
    score REAL,
    error_probability REAL,
    scores TEXT NOT NULL,
    attempts TEXT NOT NULL,
    case_id TEXT,
    reason TEXT NOT NULL,
    flags TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_chain_time ON decisions (chain, time);
"""


@dataclass(frozen=True)
class AuditRecord:
    """One recorded decision. ``time`` is UTC; ``score`` is the value the rule read."""

    id: int
    time: datetime
    chain: str
    question: str
    answer: str | None
    chosen_answer: str | None
    action: str
    passed: bool
    method: str | None
    score: float | None
    error_probability: float | None
    scores: dict[str, float]
    attempts: list[dict[str, Any]]
    case_id: str | None
    reason: str
    flags: list[str]
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = self.time.isoformat()
        return d


class AuditTrail:
    """Records every decision; a SQLite file at ``path``, or in memory when ``None``.

    Safe to share between threads (and between a sync and an async guard).

    >>> from semgrad_guard.policy import GuardDecision
    >>> audit = AuditTrail()
    >>> audit.record(GuardDecision(action="abstain", answer="I don't know", passed=False,
    ...     score=None, error_probability=None, attempts=[], rule="rag", case_id=None,
    ...     reason="score failed", raw=None, question="Why?"))
    1
    >>> [r.action for r in audit.records(chain="rag")]
    ['abstain']
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path),
                                   check_same_thread=False)
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)

    def record(self, decision: GuardDecision, metadata: dict[str, Any] | None = None,
               *, at: float | None = None) -> int:
        """Store one decision; returns its record id."""
        score = decision.score
        row = (
            time.time() if at is None else at,
            decision.rule,
            decision.question,
            decision.answer,
            decision.chosen_answer,
            decision.action,
            int(decision.passed),
            None if score is None else score.method,
            decision.value,
            decision.error_probability,
            json.dumps({} if score is None else dict(score.scores)),
            json.dumps([a.to_dict() for a in decision.attempts], default=str),
            decision.case_id,
            decision.reason,
            json.dumps(list(decision.flags)),
            json.dumps(metadata or {}, default=str),
        )
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO decisions (time, chain, question, answer, chosen_answer, action, "
                "passed, method, score, error_probability, scores, attempts, case_id, reason, "
                "flags, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return int(cursor.lastrowid or 0)

    def records(self, chain: str | None = None, action: str | None = None,
                since: datetime | float | None = None, limit: int | None = None
                ) -> list[AuditRecord]:
        """Recorded decisions, oldest first, filtered by chain, action and time."""
        where: list[str] = []
        params: list[Any] = []
        if chain is not None:
            where.append("chain = ?")
            params.append(chain)
        if action is not None:
            where.append("action = ?")
            params.append(action)
        if since is not None:
            where.append("time >= ?")
            params.append(since.timestamp() if isinstance(since, datetime) else float(since))
        sql = "SELECT * FROM decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time, id"
        if limit is not None:
            # The newest ``limit`` records, still oldest first.
            sql = f"SELECT * FROM ({sql.replace(' ORDER BY time, id', '')} " \
                  f"ORDER BY time DESC, id DESC LIMIT ?) ORDER BY time, id"
            params.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_to_record(row) for row in rows]

    def to_dicts(self, **filters: Any) -> list[dict[str, Any]]:
        """The records as plain data, for export (same filters as :meth:`records`)."""
        return [r.to_dict() for r in self.records(**filters)]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_record(row: tuple[Any, ...]) -> AuditRecord:
    (id_, t, chain, question, answer, chosen, action, passed, method, score, p, scores,
     attempts, case_id, reason, flags, metadata) = row
    return AuditRecord(
        id=int(id_), time=datetime.fromtimestamp(t, tz=UTC), chain=chain,
        question=question, answer=answer, chosen_answer=chosen, action=action,
        passed=bool(passed), method=method, score=score, error_probability=p,
        scores=json.loads(scores), attempts=json.loads(attempts), case_id=case_id,
        reason=reason, flags=json.loads(flags), metadata=json.loads(metadata))
