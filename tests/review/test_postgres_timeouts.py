"""A hung PostgreSQL server cannot hold a reviewer: every call is bounded in time."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

import pytest

from semgrad_guard.review import PostgresReviewStore, ReviewQueue, ReviewStoreError


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_hung_server_backend_does_not_block_approve(postgres_url: str) -> None:
    store = PostgresReviewStore(postgres_url, statement_timeout=1.0, connect_timeout=5.0)
    queue = ReviewQueue(store)
    case = queue.submit(chain="c", question="q", answer="a")
    backend = int(store._run(lambda conn: conn.execute("SELECT pg_backend_pid() AS pid")
                             .fetchone()["pid"]))
    os.kill(backend, signal.SIGSTOP)  # the server process serving this connection hangs
    try:
        thread, outcome = _in_thread(lambda: queue.approve(case.id, reviewer="alice"))
        thread.join(60)
        assert not thread.is_alive(), "approve still blocked on the hung server after 60 s"
    finally:
        os.kill(backend, signal.SIGCONT)
    # The hung connection was cut; the decision went through on a new one.
    assert not isinstance(outcome[0], Exception), outcome
    assert outcome[0].status == "approved"
    assert queue.get(case.id).status == "approved"
    queue.close()


def test_a_server_that_never_answers_is_a_typed_error() -> None:
    # A TCP listener that accepts connections and never says a word.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        thread, outcome = _in_thread(lambda: PostgresReviewStore(
            f"postgresql://nobody@127.0.0.1:{port}/db", connect_timeout=1.0))
        thread.join(60)
        assert not thread.is_alive(), "connecting still blocked after 60 s"
        assert isinstance(outcome[0], ReviewStoreError)
        assert f"127.0.0.1:{port}" in str(outcome[0]) or "timeout" in str(outcome[0])
        print(f"\ngave up connecting after {time.monotonic() - started:.1f} s")
    finally:
        listener.close()


def test_timeouts_must_be_positive(postgres_url: str) -> None:
    from semgrad_guard.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout"):
        PostgresReviewStore(postgres_url, statement_timeout=0)
