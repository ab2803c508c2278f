"""Decisions reach other services: signed POSTs from a durable outbox to a real HTTP server."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from semgrad_guard.cli import main
from semgrad_guard.review import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CaseAlreadyDecidedError,
    EscalatedCase,
    WebhookConfig,
    WebhookDeliveryError,
    open_review_queue,
    verify_signature,
)
from semgrad_guard.review.webhook import WebhookSender

from .conftest import REVIEW_TOKEN, free_port

FORK = multiprocessing.get_context("fork")
SECRET = "webhook-secret-7d1f"


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers as scripted.

    ``codes`` are answered in turn (then 200); ``redirect_to`` answers a 301 with that
    Location; while ``hold`` is clear, requests wait (``arrived`` is set first).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.codes: list[int] = []
        self.redirect_to: str | None = None
        self.arrived = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                # self.headers matches names case-insensitively, as HTTP does.
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": self.headers, "body": body})
                receiver.arrived.set()
                receiver.hold.wait(60)
                if receiver.redirect_to is not None:
                    self.send_response(301)
                    self.send_header("Location", receiver.redirect_to)
                else:
                    self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self._record()

            def do_GET(self) -> None:  # noqa: N802
                self._record()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/review"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests"
            time.sleep(0.02)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_each_decision_is_posted_as_signed_json(queue_url: str, receiver: Receiver) -> None:
    config = WebhookConfig(url=receiver.url, secret=SECRET, backoff=0)
    with open_review_queue(queue_url, webhook=config) as queue:
        case = queue.submit(chain="support-rag", question="q?", answer="a", score=0.5)
        decided = queue.edit(case.id, answer="better", reviewer="alice", reason="typo")
        with pytest.raises(CaseAlreadyDecidedError):  # a refused decision posts nothing
            queue.approve(case.id)
        (delivery,) = queue.deliveries()  # written with the decision, in one transaction
        assert delivery.case_id == case.id
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert (request["method"], request["path"]) == ("POST", "/hooks/review")
    assert request["headers"]["Content-Type"] == "application/json"
    payload = json.loads(request["body"])
    assert payload["event"] == "case.decided"
    assert payload["delivery_id"] == request["headers"][DELIVERY_HEADER] == delivery.id
    assert EscalatedCase.from_dict(payload["case"]) == decided
    assert abs(int(request["headers"][TIMESTAMP_HEADER]) - time.time()) < 60
    assert verify_signature(SECRET, request["headers"], request["body"])
    # Tampered, signed with another key, or replayed later: refused.
    assert not verify_signature(SECRET, request["headers"], request["body"] + b" ")
    assert not verify_signature("other-secret", request["headers"], request["body"])
    assert not verify_signature(SECRET, request["headers"], request["body"],
                                now=time.time() + 600)
    with open_review_queue(queue_url) as queue:
        assert [d.status for d in queue.deliveries()] == ["delivered"]


def test_redirects_are_not_followed(sqlite_url: str, receiver: Receiver,
                                    caplog: pytest.LogCaptureFixture) -> None:
    with Receiver() as elsewhere:
        for target in (elsewhere.url, "ftp://127.0.0.1/hooks"):
            receiver.redirect_to = target
            with open_review_queue(sqlite_url, webhook=WebhookConfig(
                    url=receiver.url, backoff=0)) as queue:
                case = queue.submit(chain="c", question="q", answer="a")
                queue.approve(case.id, reviewer="alice")
                assert queue.flush_webhooks(10) == 0
                delivery = next(d for d in queue.deliveries() if d.case_id == case.id)
            assert delivery.status == "failed" and "redirect" in (delivery.last_error or "")
            assert target in (delivery.last_error or "")
        assert elsewhere.requests == []  # neither a GET nor a POST reached the target
    assert [r["method"] for r in receiver.requests] == ["POST", "POST"]  # one try each
    assert any(isinstance(r.exc_info[1], WebhookDeliveryError)  # type: ignore[index]
               for r in caplog.records if r.exc_info)


def test_a_hanging_receiver_does_not_hold_the_decision(sqlite_url: str,
                                                       receiver: Receiver) -> None:
    receiver.hold.clear()
    config = WebhookConfig(url=receiver.url, timeout=30, flush_on_close=0)
    with open_review_queue(sqlite_url, webhook=config) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        decided = queue.approve(case.id, reviewer="alice")
        assert receiver.arrived.wait(30)
        # The decision came back while the receiver still holds the notification.
        assert decided.status == "approved" and not receiver.hold.is_set()
        assert queue.get(case.id).status == "approved"
        receiver.hold.set()


def test_server_errors_are_retried_with_the_same_delivery_id(queue_url: str,
                                                             receiver: Receiver) -> None:
    receiver.codes = [503, 500, 429]
    with open_review_queue(queue_url, webhook=WebhookConfig(url=receiver.url, secret=SECRET,
                                                            backoff=0.01)) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        queue.approve(case.id, reviewer="alice")
        assert queue.flush_webhooks(20) == 0
        (delivery,) = queue.deliveries()
    assert (delivery.status, delivery.attempts) == ("delivered", 4)
    ids = {r["headers"][DELIVERY_HEADER] for r in receiver.requests}
    assert ids == {delivery.id} and len(receiver.requests) == 4
    assert all(verify_signature(SECRET, r["headers"], r["body"]) for r in receiver.requests)


def test_a_client_error_is_logged_and_the_decision_stands(
        sqlite_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.codes = [400]
    with open_review_queue(sqlite_url, webhook=receiver.url) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        assert queue.reject(case.id, reviewer="alice").status == "rejected"
        queue.flush_webhooks(10)
        assert queue.get(case.id).status == "rejected"
        assert [d.status for d in queue.deliveries()] == ["failed"]
    assert len(receiver.requests) == 1  # a 4xx is not retried
    failure = next(r for r in caplog.records if r.exc_info)
    assert isinstance(failure.exc_info[1], WebhookDeliveryError)  # type: ignore[index]
    assert "HTTP 400" in str(failure.exc_info[1])  # type: ignore[index]


def test_an_unreachable_receiver_is_retried_then_failed(sqlite_url: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/closed", attempts=2,
                           backoff=0, timeout=1)
    with open_review_queue(sqlite_url, webhook=config) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        queue.approve(case.id, reviewer="alice")
        assert queue.flush_webhooks(10) == 0
        (delivery,) = queue.deliveries()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert "ConnectError" in (delivery.last_error or "")


def _decide_and_hang(url: str, case_id: str, receiver_url: str) -> None:
    queue = open_review_queue(url, webhook=WebhookConfig(url=receiver_url, secret=SECRET,
                                                         timeout=2))
    queue.approve(case_id, reviewer="alice")
    time.sleep(120)  # killed while the notification is in flight


def test_kill_9_during_delivery_then_a_restart_delivers_it(tmp_path: Path,
                                                          receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    with open_review_queue(url) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
    receiver.hold.clear()
    decider = FORK.Process(target=_decide_and_hang, args=(url, case.id, receiver.url))
    decider.start()
    try:
        assert receiver.arrived.wait(30)  # the POST is in flight...
    finally:
        os.kill(decider.pid, signal.SIGKILL)  # type: ignore[arg-type]
        decider.join(30)
    assert decider.exitcode == -signal.SIGKILL
    receiver.hold.set()
    first = receiver.requests[0]
    with open_review_queue(url) as queue:
        assert queue.get(case.id).status == "approved"
        assert [d.status for d in queue.deliveries()] == ["pending"]

    # A fresh process, the review page server, opens the queue with the same webhook.
    env = {**os.environ, "SEMGRAD_GUARD_REVIEW_TOKEN": REVIEW_TOKEN,
           "SEMGRAD_GUARD_WEBHOOK_SECRET": SECRET}
    server = subprocess.Popen(
        [sys.executable, "-m", "semgrad_guard.cli", "review", "serve", "--queue", url,
         "--port", str(free_port()), "--webhook-url", receiver.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        receiver.wait_for(2, timeout=60)
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0].decode()
    again = receiver.requests[1]
    assert again["headers"][DELIVERY_HEADER] == first["headers"][DELIVERY_HEADER]
    assert json.loads(again["body"])["case"]["id"] == case.id
    assert verify_signature(SECRET, again["headers"], again["body"])
    assert SECRET not in output
    with open_review_queue(url) as queue:
        (delivery,) = queue.deliveries()
        assert (delivery.status, delivery.attempts) == ("delivered", 2)


def test_the_command_line_signs_with_a_secret(sqlite_url: str, receiver: Receiver,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with open_review_queue(sqlite_url) as queue:
        first = queue.submit(chain="c", question="q", answer="a")
        second = queue.submit(chain="c", question="q", answer="a")
    assert main(["review", "approve", first.id, "--queue", sqlite_url, "--webhook-url",
                 receiver.url, "--webhook-secret", SECRET]) == 0
    monkeypatch.setenv("SEMGRAD_GUARD_WEBHOOK_SECRET", SECRET)
    assert main(["review", "reject", second.id, "--queue", sqlite_url, "--webhook-url",
                 receiver.url]) == 0
    assert len(receiver.requests) == 2
    assert all(verify_signature(SECRET, r["headers"], r["body"]) for r in receiver.requests)
    monkeypatch.delenv("SEMGRAD_GUARD_WEBHOOK_SECRET")
    assert main(["review", "list", "--queue", sqlite_url, "--webhook-secret", SECRET]) == 2
    assert "--webhook-url" in capsys.readouterr().err


def test_one_post_without_redirects_and_within_its_timeout() -> None:
    sender = WebhookSender(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/closed",
                                         timeout=1))
    case = EscalatedCase(id="c1", chain="c", question="q", answer="a")
    result = sender.post(case, "d1")
    assert result.outcome == "retry" and "ConnectError" in result.detail
    sender.close()


def test_webhook_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        WebhookConfig(url="ftp://example.org/x")
    with pytest.raises(ValidationError):
        WebhookConfig(url="http://127.0.0.1:99999/x")
    with pytest.raises(ValidationError):
        WebhookConfig(url="http://127.0.0.1/x", retries=3)  # type: ignore[call-arg]
    assert SECRET not in repr(WebhookConfig(url="http://h/x", secret=SECRET))
    assert SIGNATURE_HEADER == "X-SemGrad-Guard-Signature"
