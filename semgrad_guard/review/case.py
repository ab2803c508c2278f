"""One escalated case: what the reviewer sees and what the decision says."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

CaseStatus = Literal["pending", "approved", "edited", "rejected"]

#: Every status a case can have; only ``pending`` cases can still be decided.
CASE_STATUSES: tuple[str, ...] = get_args(CaseStatus)

#: The statuses a reviewer's decision can set.
DECISION_STATUSES: tuple[str, ...] = ("approved", "edited", "rejected")

#: Metadata keys a guard adds to the cases it escalates, beside the caller's own: the
#: score ``method``, every attempt (``attempts``), the rule's ``threshold``, which attempt
#: the rule keeps (``keep``) and kept (``chosen_attempt``), and the id of the audit
#: trail that records the escalation (``audit_trail``).
GUARD_METADATA_KEYS = ("method", "attempts", "threshold", "keep", "chosen_attempt",
                       "audit_trail")


@dataclass(frozen=True)
class EscalatedCase:
    """A generation a policy escalated to a human, and the reviewer's decision.

    ``score`` follows the library's convention (**higher = more uncertain**) and is
    ``None`` when the score could not be computed (the fail-closed path).
    ``final_answer`` is what the user should receive: the answer itself when approved,
    the reviewer's text when edited, ``None`` while pending or when rejected (then
    ``reason`` says why). Times are timezone-aware UTC.

    >>> case = EscalatedCase(id="c1", chain="support-rag", question="Refund window?",
    ...                      answer="30 days", score=0.0012)
    >>> case.status, case.is_decided, case.to_dict()["created_at"].endswith("+00:00")
    ('pending', False, True)
    """

    id: str
    chain: str
    question: str
    answer: str
    score: float | None = None
    components: dict[str, float] = field(default_factory=dict)
    context: list[str] = field(default_factory=list)
    rule: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: CaseStatus = "pending"
    final_answer: str | None = None
    reviewer: str | None = None
    reason: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    decided_at: datetime | None = None

    @property
    def is_decided(self) -> bool:
        """True once a reviewer approved, edited or rejected the case."""
        return self.status != "pending"

    def decided(self, status: CaseStatus, *, final_answer: str | None, reviewer: str | None,
                reason: str | None, decided_at: datetime) -> EscalatedCase:
        """A copy of this case carrying a decision (the store persists it)."""
        return replace(self, status=status, final_answer=final_answer, reviewer=reviewer,
                       reason=reason, decided_at=decided_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings); ``from_dict`` reverses it."""
        return {
            "id": self.id,
            "chain": self.chain,
            "question": self.question,
            "context": list(self.context),
            "answer": self.answer,
            "score": self.score,
            "components": dict(self.components),
            "rule": self.rule,
            "metadata": dict(self.metadata),
            "status": self.status,
            "final_answer": self.final_answer,
            "reviewer": self.reviewer,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EscalatedCase:
        """Rebuild a case from ``to_dict`` output (e.g. a webhook payload).

        >>> case = EscalatedCase(id="c1", chain="rag", question="q", answer="a")
        >>> EscalatedCase.from_dict(case.to_dict()) == case
        True
        """
        decided_at = data.get("decided_at")
        return cls(
            id=str(data["id"]),
            chain=str(data["chain"]),
            question=str(data["question"]),
            answer=str(data["answer"]),
            score=None if data.get("score") is None else float(data["score"]),
            components=dict(data.get("components") or {}),
            context=list(data.get("context") or []),
            rule=data.get("rule"),
            metadata=dict(data.get("metadata") or {}),
            status=data.get("status", "pending"),
            final_answer=data.get("final_answer"),
            reviewer=data.get("reviewer"),
            reason=data.get("reason"),
            created_at=parse_time(data["created_at"]),
            decided_at=parse_time(decided_at) if decided_at else None,
        )


def parse_time(value: str | datetime) -> datetime:
    """An aware UTC datetime from an ISO string or datetime (naive means UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)

