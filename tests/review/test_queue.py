"""The queue's contract, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest

from semgrad_guard.errors import SemGradGuardError
from semgrad_guard.review import (
    CaseAlreadyDecidedError,
    CaseNotFoundError,
    DecisionTimeoutError,
    EscalatedCase,
    InvalidCaseError,
    ReviewQueue,
    open_review_queue,
)


def submit(queue: ReviewQueue, **overrides: object) -> EscalatedCase:
    fields: dict[str, object] = dict(
        chain="support-rag", question="How long is the refund window?",
        answer="You have 90 days.", score=0.0012,
        components={"semgrad": 0.0012, "pg": 0.4, "mean_entropy": 1.7},
        context=["Refunds are accepted within 30 days.", "Shipping is free over 50 EUR."],
        rule="support-rag", metadata={"user": "u-17", "attempts": [1, 2], "ünï": "cödé"})
    fields.update(overrides)
    return queue.submit(**fields)  # type: ignore[arg-type]


def test_submit_stores_every_field(queue: ReviewQueue) -> None:
    before = datetime.now(UTC)
    case = submit(queue)
    assert case.status == "pending" and isinstance(case.id, str) and len(case.id) == 32
    assert before <= case.created_at <= datetime.now(UTC)
    stored = queue.get(case.id)
    assert stored == case
    assert stored.context == ["Refunds are accepted within 30 days.",
                              "Shipping is free over 50 EUR."]
    assert stored.components == {"semgrad": 0.0012, "pg": 0.4, "mean_entropy": 1.7}
    assert stored.metadata == {"user": "u-17", "attempts": [1, 2], "ünï": "cödé"}
    assert stored.final_answer is None and stored.decided_at is None
    assert stored.created_at.tzinfo is not None


def test_score_may_be_missing_and_score_must_be_finite(queue: ReviewQueue) -> None:
    assert queue.get(submit(queue, score=None).id).score is None
    with pytest.raises(InvalidCaseError, match="finite"):
        submit(queue, score=float("nan"))
    with pytest.raises(InvalidCaseError):
        submit(queue, components={"semgrad": float("inf")})
    with pytest.raises(InvalidCaseError, match="JSON"):
        submit(queue, metadata={"when": object()})
    with pytest.raises(InvalidCaseError, match="list of documents"):
        submit(queue, context="one long string")
    with pytest.raises(InvalidCaseError, match="empty"):
        submit(queue, chain=" ")
    with pytest.raises(InvalidCaseError, match="NUL"):
        submit(queue, answer="a\x00b")
    assert queue.counts()["pending"] == 1


def test_list_filters_by_status_and_chain_oldest_first(queue: ReviewQueue) -> None:
    a = submit(queue, chain="support-rag")
    b = submit(queue, chain="billing-agent")
    c = submit(queue, chain="support-rag")
    queue.approve(b.id, reviewer="alice")
    assert [x.id for x in queue.list()] == [a.id, b.id, c.id]
    assert [x.id for x in queue.list(status="pending")] == [a.id, c.id]
    assert [x.id for x in queue.list(status="approved")] == [b.id]
    assert [x.id for x in queue.list(chain="support-rag")] == [a.id, c.id]
    assert queue.list(status="approved", chain="support-rag") == []
    assert [x.id for x in queue.list(limit=1)] == [a.id]
    assert queue.counts() == {"pending": 2, "approved": 1, "edited": 0, "rejected": 0}
    with pytest.raises(SemGradGuardError, match="status"):
        queue.list(status="done")  # type: ignore[arg-type]


def test_approve_edit_reject_carry_what_a_resumed_chain_needs(queue: ReviewQueue) -> None:
    approved = queue.approve(submit(queue).id, reviewer="alice")
    assert (approved.status, approved.final_answer, approved.reviewer) == (
        "approved", "You have 90 days.", "alice")
    assert approved.decided_at is not None and approved.decided_at >= approved.created_at

    edited = queue.edit(submit(queue).id, answer="You have 30 days.", reviewer="bob",
                        reason="policy says 30")
    assert (edited.status, edited.final_answer, edited.reason) == (
        "edited", "You have 30 days.", "policy says 30")
    assert edited.answer == "You have 90 days."  # the model's answer is kept for audit

    rejected = queue.reject(submit(queue).id, reviewer="carol", reason="off-topic")
    assert (rejected.status, rejected.final_answer, rejected.reason) == (
        "rejected", None, "off-topic")
    for case in (approved, edited, rejected):
        assert queue.get(case.id) == case
        assert EscalatedCase.from_dict(case.to_dict()) == case


def test_a_case_is_decided_only_once(queue: ReviewQueue) -> None:
    case = submit(queue)
    queue.reject(case.id, reviewer="alice", reason="wrong")
    for decide in (lambda: queue.approve(case.id, reviewer="bob"),
                   lambda: queue.edit(case.id, answer="x", reviewer="bob"),
                   lambda: queue.reject(case.id, reviewer="bob")):
        with pytest.raises(CaseAlreadyDecidedError, match="already rejected by alice") as info:
            decide()
        assert info.value.case.reviewer == "alice"
        assert isinstance(info.value, SemGradGuardError)
    assert queue.get(case.id).reviewer == "alice"


def test_unknown_case_is_a_typed_error(queue: ReviewQueue) -> None:
    for call in (lambda: queue.get("nope"), lambda: queue.approve("nope"),
                 lambda: queue.edit("nope", answer="x"), lambda: queue.reject("nope"),
                 lambda: queue.poll("nope"), lambda: queue.wait("nope", timeout=0.1)):
        with pytest.raises(CaseNotFoundError, match="nope"):
            call()


def test_poll_and_wait_see_a_decision_from_another_queue_object(queue_url: str) -> None:
    with open_review_queue(queue_url) as caller, open_review_queue(queue_url) as reviewer:
        case = submit(caller)
        assert caller.poll(case.id) is None
        with pytest.raises(DecisionTimeoutError) as info:
            caller.wait(case.id, timeout=0.2, poll_interval=0.05)
        assert isinstance(info.value, TimeoutError) and info.value.case.status == "pending"

        timer = threading.Timer(0.2, reviewer.edit, args=(case.id,),
                                kwargs={"answer": "30 days", "reviewer": "alice"})
        timer.start()
        started = time.monotonic()
        decided = caller.wait(case.id, timeout=10, poll_interval=0.05)
        timer.join()
        assert decided.status == "edited" and decided.final_answer == "30 days"
        assert time.monotonic() - started < 5
        assert caller.poll(case.id) == decided


def test_wait_wakes_at_once_for_a_decision_through_the_same_queue(queue: ReviewQueue) -> None:
    case = submit(queue)
    threading.Timer(0.1, queue.approve, args=(case.id, "alice")).start()
    started = time.monotonic()
    assert queue.wait(case.id, timeout=30, poll_interval=20).status == "approved"
    assert time.monotonic() - started < 10  # far below the 20 s poll interval


def test_wait_async_returns_the_decision(queue: ReviewQueue) -> None:
    case = submit(queue)

    async def scenario() -> EscalatedCase:
        asyncio.get_running_loop().call_later(
            0.1, lambda: queue.reject(case.id, reviewer="alice", reason="no"))
        return await queue.wait_async(case.id, timeout=10, poll_interval=0.05)

    assert asyncio.run(scenario()).status == "rejected"
    with pytest.raises(DecisionTimeoutError):
        asyncio.run(queue.wait_async(submit(queue).id, timeout=0.1, poll_interval=0.02))


def test_callbacks_run_once_per_decision_and_a_failing_one_is_logged(
        queue: ReviewQueue, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str]] = []

    @queue.on_decision
    def record(case: EscalatedCase) -> None:
        seen.append((case.id, case.status))

    def broken(case: EscalatedCase) -> None:
        raise RuntimeError("callback bug")

    queue.on_decision(broken)
    a, b = submit(queue), submit(queue)
    queue.approve(a.id, reviewer="alice")
    queue.reject(b.id, reviewer="alice")
    with pytest.raises(CaseAlreadyDecidedError):
        queue.approve(a.id, reviewer="bob")
    assert seen == [(a.id, "approved"), (b.id, "rejected")]
    failures = [r for r in caplog.records if "callback" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None
    assert queue.get(b.id).status == "rejected"  # a failing callback undoes nothing
