"""The audit trail under contention: many processes, threads, a long reader, a held lock."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from semgrad_guard.errors import AuditError
from semgrad_guard.policy import AuditTrail, Guard, GuardDecision, PolicyConfig
from semgrad_guard.testing import ScriptedScorer
from tests.sqlite_locks import hold_write_lock

FORK = multiprocessing.get_context("fork")


def _decision(question: str, case_id: str | None = None) -> GuardDecision:
    return GuardDecision(action="abstain" if case_id is None else "escalate", answer="-",
                         passed=False, score=None, error_probability=None, attempts=[],
                         rule="load", case_id=case_id, reason="test", raw=None,
                         question=question)


def _write(path: str, writer: int, threads: int, per_thread: int, out: Any) -> None:
    # Two AuditTrail objects shared by the threads of this process.
    trails = [AuditTrail(path), AuditTrail(path)]
    failures: list[str] = []

    def work(thread: int) -> None:
        trail = trails[thread % 2]
        for n in range(per_thread):
            try:
                trail.record(_decision(f"w{writer}-t{thread}-n{n}"))
            except Exception as exc:  # reported to the parent, which fails the test
                failures.append(f"{type(exc).__name__}: {exc}")
                return

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for trail in trails:
        trail.close()
    out.send(failures)
    out.close()


def _read_for_a_long_time(path: str, holding: Any, release: Any) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT COUNT(*) FROM decisions").fetchone()  # holds a read snapshot
    holding.set()
    release.wait(120)
    conn.execute("COMMIT")
    conn.close()


def test_8_processes_x_4_threads_and_a_long_reader_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.db")
    AuditTrail(path).close()
    holding, release = FORK.Event(), FORK.Event()
    reader = FORK.Process(target=_read_for_a_long_time, args=(path, holding, release))
    reader.start()
    assert holding.wait(30)
    writers, threads, per_thread = 8, 4, 50
    pipes = [FORK.Pipe(duplex=False) for _ in range(writers)]
    started = time.perf_counter()
    processes = [FORK.Process(target=_write, args=(path, w, threads, per_thread, pipes[w][1]))
                 for w in range(writers)]
    for process in processes:
        process.start()
    failures: list[str] = []
    deadline = time.monotonic() + 120
    for receiver, _ in pipes:
        if receiver.poll(max(0.0, deadline - time.monotonic())):
            failures += receiver.recv()
        else:
            failures.append("a writer did not finish in 120 s")
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    elapsed = time.perf_counter() - started
    release.set()
    reader.join(30)
    total = writers * threads * per_thread
    print(f"\n{total} audit records from {writers} processes x {threads} threads with a "
          f"reader holding a snapshot: {elapsed:.2f} s")
    assert failures == []
    assert all(process.exitcode == 0 for process in processes)
    with AuditTrail(path) as audit:
        questions = [record.question for record in audit.records()]
    assert len(questions) == len(set(questions)) == total


def test_eight_threads_over_two_trail_objects_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    trails = [AuditTrail(path), AuditTrail(path)]
    failures: list[str] = []

    def work(thread: int) -> None:
        for n in range(200):
            try:
                trails[thread % 2].record(_decision(f"t{thread}-{n}"))
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert failures == [] and not any(worker.is_alive() for worker in workers)
    assert len(trails[0]) == len(trails[1]) == 1600
    for trail in trails:
        trail.close()


def test_an_escalated_caller_gets_its_case_id_while_the_audit_is_locked(tmp_path: Path) -> None:
    from semgrad_guard.review import open_review_queue

    audit_path = tmp_path / "audit.db"
    queue_url = f"sqlite:///{tmp_path / 'review.db'}"
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "actions": [{"type": "escalate", "queue": queue_url}]}})
    audit = AuditTrail(audit_path, retry_for=0.5)
    guard = Guard(policy, scorer=ScriptedScorer([0.9, 0.8]), audit=audit)
    holding, release = FORK.Event(), FORK.Event()
    locker = FORK.Process(target=hold_write_lock, args=(str(audit_path), holding, release))
    locker.start()
    try:
        assert holding.wait(30)
        decision = guard.check("Refund window?", "90 days", metadata={"user": "u1"})
        assert decision.action == "escalate" and decision.case_id
        assert audit.pending == 1  # kept on disk beside the trail, not lost
    finally:
        release.set()
        locker.join(30)
    with open_review_queue(queue_url) as queue:
        assert queue.get(decision.case_id).status == "pending"
    # The next use of the trail (here: another process's object) reconciles it.
    second = guard.check("Second?", "maybe")
    with AuditTrail(audit_path) as reopened:
        records = reopened.records()
        assert [r.case_id for r in records] == [decision.case_id, second.case_id]
        assert records[0].metadata["user"] == "u1"
        assert reopened.pending == 0
    audit.close()


def test_retries_then_a_typed_error_carrying_the_decision(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    audit = AuditTrail(path, retry_for=0.3, spool=False)
    holding, release = FORK.Event(), FORK.Event()
    locker = FORK.Process(target=hold_write_lock, args=(str(path), holding, release))
    locker.start()
    try:
        assert holding.wait(30)
        decision = _decision("locked out", case_id="case-1")
        started = time.monotonic()
        with pytest.raises(AuditError, match="locked") as caught:
            audit.record(decision)
        assert time.monotonic() - started >= 0.3  # it retried before giving up
        assert caught.value.decision is decision
        assert caught.value.decision.case_id == "case-1"
    finally:
        release.set()
        locker.join(30)
    assert audit.record(decision) is not None  # the lock is gone: recorded
    audit.close()


def test_an_existing_trail_opens_while_another_process_writes(tmp_path: Path) -> None:
    """Opening a trail whose schema is current takes no write lock, so processes that
    start while another one writes open at once instead of timing out."""
    path = tmp_path / "audit.db"
    AuditTrail(path).close()
    holding, release = FORK.Event(), FORK.Event()
    locker = FORK.Process(target=hold_write_lock, args=(str(path), holding, release))
    locker.start()
    try:
        assert holding.wait(30)
        audit = AuditTrail(path, retry_for=0.3, spool=False)  # raised AuditError before
        assert audit.records() == []
    finally:
        release.set()
        locker.join(30)
    assert audit.record(_decision("after the lock")) is not None
    audit.close()


def test_a_trail_of_an_earlier_version_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditTrail(path).close()
    with sqlite3.connect(path) as db:  # as an earlier version left it: no schema version
        db.execute("PRAGMA user_version=0")
        db.execute("DROP INDEX decisions_uid")
    audit = AuditTrail(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] > 0
        assert db.execute("SELECT name FROM sqlite_master WHERE name='decisions_uid'"
                          ).fetchone() is not None
    assert audit.record(_decision("migrated")) is not None
    audit.close()


def test_the_trail_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with AuditTrail(tmp_path / "audit.db") as audit:
            audit.record(_decision("q"))
            files = [p for p in tmp_path.iterdir() if p.name.startswith("audit.db")]
            assert files
            for file in files:
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        os.umask(old)
