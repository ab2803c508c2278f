"""A process killed between queuing an escalated case and recording it: the next guard
records the case from the queue, once."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

from semgrad_guard.policy import AuditTrail, Guard, GuardDecision, PolicyConfig
from semgrad_guard.review import open_review_queue
from semgrad_guard.testing import ScriptedScorer

FORK = multiprocessing.get_context("fork")


def _policy(queue_url: str) -> PolicyConfig:
    return PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5},
        "actions": [{"type": "retry_with_retrieval", "k_schedule": [8]},
                    {"type": "escalate", "queue": queue_url,
                     "pending_message": "A reviewer will answer."}]}})


class _StallingTrail(AuditTrail):
    """A trail whose owner stalls, as a process about to die would, right after the
    case was queued and before the decision is recorded."""

    def __init__(self, path: Path, fd: int) -> None:
        super().__init__(path)
        self.fd = fd

    def record(self, decision: GuardDecision, metadata: dict[str, Any] | None = None,
               *, at: float | None = None) -> int | None:
        os.write(self.fd, f"queued {decision.case_id}\n".encode())
        signal.pause()  # until SIGKILL
        raise AssertionError("unreachable")


def _escalate_then_stall(audit_path: str, queue_url: str, fd: int) -> None:
    guard = Guard(_policy(queue_url), scorer=ScriptedScorer([0.9, 0.7]),
                  audit=_StallingTrail(Path(audit_path), fd))
    guard.run("Why is the sky blue?", lambda attempt: f"answer at k={attempt.k}",
              run_name="rag-faq", metadata={"user": "u1"})


def test_a_case_whose_process_was_killed_before_its_audit_record_is_recorded_once(
        tmp_path: Path) -> None:
    audit_path = tmp_path / "audit.db"
    queue_url = f"sqlite:///{tmp_path / 'review.db'}"
    read_end, write_end = os.pipe()
    child = FORK.Process(target=_escalate_then_stall,
                         args=(str(audit_path), queue_url, write_end))
    child.start()
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        line = lines.readline()
    assert line.startswith("queued "), line
    case_id = line.split()[1]
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL

    with open_review_queue(queue_url) as queue:
        case = queue.get(case_id)
        assert case.status == "pending"
    with AuditTrail(audit_path) as trail:
        assert trail.records() == []  # the window the kill left open

    # A guard built on the same trail (a restarted process) records the case.
    with AuditTrail(audit_path) as trail, Guard(_policy(queue_url), audit=trail) as guard:
        (record,) = trail.records()
        assert record.case_id == case_id and record.action == "escalate"
        assert record.flags == ["reconciled"]
        assert record.chain == "default" and record.question == "Why is the sky blue?"
        assert record.answer == "A reviewer will answer."
        assert record.chosen_answer == "answer at k=None"  # keep: first
        assert record.score == 0.9 and record.method == "semgrad"
        assert [a["k"] for a in record.attempts] == [None, 8]
        assert record.metadata == {"user": "u1", "run_name": "rag-faq", "tags": []}
        assert "stopped before recording it" in record.reason
        # Idempotent: again, from this guard or from a new one, nothing is added.
        assert guard.reconcile() == 0
    with AuditTrail(audit_path) as trail:
        Guard(_policy(queue_url), audit=trail).close()
        assert len(trail) == 1


def test_a_late_record_of_a_reconciled_case_is_not_a_second_record(tmp_path: Path) -> None:
    queue_url = f"sqlite:///{tmp_path / 'review.db'}"
    with AuditTrail(tmp_path / "audit.db") as trail:
        guard = Guard(_policy(queue_url), scorer=ScriptedScorer([0.9, 0.7]), audit=trail)
        original = trail.record
        late: list[GuardDecision] = []
        trail.record = lambda decision, *a, **k: late.append(decision)  # type: ignore[method-assign]
        decision = guard.run("q", lambda attempt: "a")
        trail.record = original  # type: ignore[method-assign]
        assert guard.reconcile() == 1
        trail.record(late[0])  # the slow writer finally writes: ignored
        assert [r.case_id for r in trail.records()] == [decision.case_id]
        guard.close()


def test_cases_of_another_trail_are_left_alone(tmp_path: Path) -> None:
    queue_url = f"sqlite:///{tmp_path / 'review.db'}"
    with AuditTrail(tmp_path / "a.db") as ours, AuditTrail(tmp_path / "b.db") as theirs:
        assert ours.trail_id != theirs.trail_id
        other = Guard(_policy(queue_url), scorer=ScriptedScorer([0.9, 0.8]), audit=theirs)
        other.run("theirs", lambda attempt: "a")
        with open_review_queue(queue_url) as queue:  # escalated without any trail
            queue.submit(chain="default", question="no trail", answer="a", rule="default")
        guard = Guard(_policy(queue_url), audit=ours)
        assert guard.reconcile() == 0 and len(ours) == 0
        assert len(theirs) == 1
        guard.close()
        other.close()
