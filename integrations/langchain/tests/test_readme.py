"""The integration README's agent section runs as written, on the real default model, with
a reviewer approving cases from another thread as they arrive."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from semgrad_guard.errors import DecisionTimeoutError
from semgrad_guard.review import ReviewQueue, open_review_queue

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(start: str) -> list[tuple[str, str]]:
    text = README.read_text()
    # The section and the next one ("What a guarded chain returns"), which it relies on.
    after = text[text.index(start):]
    section = "\n## ".join(after.split("\n## ", 2)[:2])
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


class Reviewer:
    """Approves every pending case of a queue, from its own thread and connection. An
    error (a database locked too long on a loaded machine) is kept and the next round
    tries again, so the thread outlives it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.approved: list[str] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.work, daemon=True)

    def work(self) -> None:
        with open_review_queue(self.url) as queue:
            while not self.stop.wait(0.2):
                try:
                    for case in queue.list(status="pending"):
                        queue.approve(case.id, reviewer="readme")
                        self.approved.append(case.id)
                except Exception as exc:  # noqa: BLE001 - kept, shown if the test fails
                    self.errors.append(exc)


def bounded_waits(monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer) -> None:
    """The README waits for its reviewer without a timeout, as an application would; here
    a wait gives up after two minutes, naming what the reviewer thread ran into, so that a
    reviewer that cannot decide fails the test instead of hanging it."""
    wait = ReviewQueue.wait

    def bounded(self: ReviewQueue, case_id: str, timeout: float | None = None,
                poll_interval: float = 0.5) -> Any:
        try:
            return wait(self, case_id, 120 if timeout is None else timeout, poll_interval)
        except DecisionTimeoutError as exc:
            raise AssertionError(f"no decision; the reviewer thread saw {reviewer.errors!r}"
                                 ) from exc

    monkeypatch.setattr(ReviewQueue, "wait", bounded)


@pytest.mark.real_model
def test_the_agent_round_trip_runs_as_written(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks("## A guarded agent, and the review round trip")
    assert [kind for kind, _ in blocks] == ["yaml", "python", "python", "python"]
    assert 'while "__interrupt__" in result:' in blocks[1][1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(blocks[0][1])
    reviewer = Reviewer("sqlite:///review.db")
    bounded_waits(monkeypatch, reviewer)
    namespace: dict[str, Any] = {}
    reviewer.thread.start()
    try:
        exec(compile(blocks[1][1], "README.md", "exec"), namespace)  # fails if the queue is None
        # Once more from a paused run: a new thread pauses, the reviewer thread decides.
        config = {"configurable": {"thread_id": "ticket-43"}}
        namespace["config"] = config
        namespace["result"] = namespace["agent"].invoke(
            {"messages": [{"role": "user", "content": "Email ann@example.org: see you."}]},
            config)
        assert "__interrupt__" in namespace["result"]
        loop = blocks[1][1][blocks[1][1].index("while"):]
        exec(compile(loop, "README.md", "exec"), namespace)
        assert "__interrupt__" not in namespace["result"]
        exec(compile(blocks[2][1], "README.md", "exec"), namespace)
        exec(compile(blocks[3][1], "README.md", "exec"), namespace)
    finally:
        reviewer.stop.set()
        reviewer.thread.join(10)
        guard = namespace.get("guard")
        if guard is not None:
            guard.close()
        if "capitals" in namespace:
            namespace["capitals"].guard.close()
        if "checkpointer" in namespace:
            namespace["checkpointer"].conn.close()
    assert reviewer.approved, "every answer went to the reviewer"
    assert namespace["answer"] == "Paris"  # approved as it was
    with open_review_queue("sqlite:///review.db") as queue:
        assert queue.counts()["pending"] == 0
        threads = {c.metadata.get("thread_id") for c in queue.list(status="approved")}
    assert {"ticket-42", "ticket-43"} <= threads
