"""Decisions reach other services: a webhook POST to a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from semgrad_guard.review import (
    SIGNATURE_HEADER,
    CaseAlreadyDecidedError,
    EscalatedCase,
    WebhookConfig,
    WebhookDeliveryError,
    WebhookNotifier,
    open_review_queue,
)


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers with scripted codes."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                # self.headers matches names case-insensitively, as HTTP does.
                receiver.requests.append({"path": self.path, "headers": self.headers,
                                          "body": body})
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/review"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_each_decision_is_posted_as_signed_json(sqlite_url: str, receiver: Receiver) -> None:
    config = WebhookConfig(url=receiver.url, secret="webhook-secret", backoff=0)
    with open_review_queue(sqlite_url, webhook=config) as queue:
        case = queue.submit(chain="support-rag", question="q?", answer="a", score=0.5)
        decided = queue.edit(case.id, answer="better", reviewer="alice", reason="typo")
        with pytest.raises(CaseAlreadyDecidedError):  # a refused decision posts nothing
            queue.approve(case.id)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hooks/review"
    assert request["headers"]["Content-Type"] == "application/json"
    payload = json.loads(request["body"])
    assert payload["event"] == "case.decided"
    assert EscalatedCase.from_dict(payload["case"]) == decided
    expected = hmac.new(b"webhook-secret", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"][SIGNATURE_HEADER] == f"sha256={expected}"


def test_server_errors_are_retried(sqlite_url: str, receiver: Receiver) -> None:
    receiver.codes = [503, 500]
    with open_review_queue(sqlite_url, webhook=WebhookConfig(url=receiver.url,
                                                             backoff=0.01)) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        queue.approve(case.id, reviewer="alice")
    assert len(receiver.requests) == 3
    assert all(json.loads(r["body"])["case"]["id"] == case.id for r in receiver.requests)


def test_a_failed_webhook_is_logged_and_the_decision_stands(
        sqlite_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.codes = [400]
    with open_review_queue(sqlite_url, webhook=receiver.url) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        assert queue.reject(case.id, reviewer="alice").status == "rejected"
        assert queue.get(case.id).status == "rejected"
    assert len(receiver.requests) == 1  # a 4xx is not retried
    failure = next(r for r in caplog.records if r.exc_info)
    assert isinstance(failure.exc_info[1], WebhookDeliveryError)  # type: ignore[index]
    assert "HTTP 400" in str(failure.exc_info[1])  # type: ignore[index]


def test_unreachable_webhook_raises_a_typed_error() -> None:
    notify = WebhookNotifier(WebhookConfig(url="http://127.0.0.1:9/closed", attempts=2,
                                           backoff=0, timeout=1))
    case = EscalatedCase(id="c1", chain="c", question="q", answer="a")
    with pytest.raises(WebhookDeliveryError, match="127.0.0.1:9"):
        notify(case)


def test_webhook_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        WebhookConfig(url="ftp://example.org/x")
    with pytest.raises(ValidationError):
        WebhookConfig(url="http://127.0.0.1/x", retries=3)  # type: ignore[call-arg]
    assert "webhook-secret" not in repr(WebhookConfig(url="http://h/x", secret="webhook-secret"))
