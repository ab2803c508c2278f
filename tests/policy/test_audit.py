"""The audit trail, and escalation into the real SQLite review queue."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from semgrad_guard.errors import ScoringError
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig
from semgrad_guard.testing import ScriptedScorer

POLICY = PolicyConfig.from_dict({
    "version": 1,
    "default": {"threshold": {"max_score": 0.5}, "actions": ["abstain"]},
    "chains": [{"name": "rag", "actions": [
        {"type": "retry_with_retrieval", "k_schedule": [8]},
        {"type": "escalate", "queue": "sqlite:///unused.db"}]}],
})


def test_every_decision_is_recorded_with_its_attempts(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the guard opens the policy's queue, relative to here
    path = tmp_path / "audit" / "decisions.db"
    audit = AuditTrail(path)
    guard = Guard(POLICY, scorer=ScriptedScorer([0.1, 0.9]), audit=audit)
    guard.check("q1", "a1", metadata={"user": "u1"})
    guard.check("q2", "a2", tags=["x"])
    audit.close()

    reopened = AuditTrail(path)  # the file keeps the records
    records = reopened.records()
    assert [(r.question, r.action, r.passed) for r in records] == \
        [("q1", "pass", True), ("q2", "abstain", False)]
    first, second = records
    assert first.score == 0.1 and first.method == "semgrad" and first.scores["nll"] == 0.1
    assert first.metadata == {"run_name": None, "tags": [], "user": "u1"}
    assert second.answer != "a2" and second.chosen_answer == "a2"
    assert second.attempts[0]["answer"] == "a2" and second.attempts[0]["k"] is None
    assert "retokenized" in second.flags
    assert second.time.tzinfo is UTC
    exported = reopened.to_dicts(action="abstain")
    assert [d["question"] for d in exported] == ["q2"]
    assert isinstance(exported[0]["time"], str)


def test_records_filter_by_chain_action_time_and_limit() -> None:
    audit = AuditTrail()
    guard = Guard(PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}}, "chains": [{"name": "rag"}]}),
        scorer=ScriptedScorer([0.1, 0.9, 0.2, 0.3]), audit=audit)
    guard.check("q0", "a", run_name="rag")
    guard.check("q1", "a", run_name="rag")
    middle = time.time()
    time.sleep(0.01)
    guard.check("q2", "a")
    guard.check("q3", "a", run_name="rag")
    assert [r.question for r in audit.records(chain="rag")] == ["q0", "q1", "q3"]
    assert [r.question for r in audit.records(action="abstain")] == ["q1"]
    assert [r.question for r in audit.records(since=middle)] == ["q2", "q3"]
    assert [r.question for r in audit.records(since=datetime.fromtimestamp(middle, UTC))] == \
        ["q2", "q3"]
    assert [r.question for r in audit.records(chain="rag", limit=2)] == ["q1", "q3"]
    assert len(audit) == 4


def test_the_audit_trail_is_safe_across_threads(tmp_path: Path) -> None:
    audit = AuditTrail(tmp_path / "a.db")
    guard = Guard(PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}}}), scorer=None, audit=audit)

    def work(n: int) -> None:
        for i in range(20):
            guard.check(f"q{n}-{i}", "a", score=None)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(audit) == 80
    assert {r.action for r in audit.records()} == {"abstain"}  # no scorer: fail closed


def test_escalation_lands_in_the_sqlite_review_queue(tmp_path: Path) -> None:
    from semgrad_guard.review import open_review_queue

    url = f"sqlite:///{tmp_path / 'review.db'}"
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5},
        "actions": [{"type": "retry_with_retrieval", "k_schedule": [8]},
                    {"type": "escalate", "queue": url, "pending_message": "pending"}]}})
    audit = AuditTrail()
    guard = Guard(policy, scorer=ScriptedScorer([0.9, 0.7]), audit=audit)
    decision = asyncio.run(guard.arun(
        "Why is the sky blue?", lambda attempt: f"answer at k={attempt.k}",
        metadata={"user": "u1"}))
    assert (decision.action, decision.answer) == ("escalate", "pending")
    assert decision.case_id is not None

    queue = open_review_queue(url)
    case = queue.get(decision.case_id)
    assert (case.status, case.chain, case.rule) == ("pending", "default", "default")
    assert case.question == "Why is the sky blue?"
    # keep: first (the default): the chain's own answer goes to the reviewer, with every
    # attempt beside it and the threshold it was held to.
    assert case.answer == "answer at k=None" and case.score == 0.9
    assert case.metadata["user"] == "u1" and len(case.metadata["attempts"]) == 2
    assert [a["answer"] for a in case.metadata["attempts"]] == ["answer at k=None",
                                                                "answer at k=8"]
    assert case.metadata["threshold"] == {"score": "semgrad", "max_score": 0.5}
    assert (case.metadata["keep"], case.metadata["chosen_attempt"]) == ("first", 0)
    assert audit.records()[0].case_id == decision.case_id
    queue.close()


def test_an_unscored_case_reaches_the_review_queue_without_a_score(tmp_path: Path) -> None:
    from semgrad_guard.review import open_review_queue

    url = f"sqlite:///{tmp_path / 'review.db'}"
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "actions": [{"type": "escalate", "queue": url}]}})
    guard = Guard(policy, scorer=ScriptedScorer([ScoringError("no ids")]))
    decision = guard.check("q", "a")
    queue = open_review_queue(url)
    assert queue.get(decision.case_id or "").score is None
    queue.close()
