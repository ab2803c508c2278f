"""Tell another service about each decision: signed JSON POSTs from a durable outbox.

A decision and its notification are written in one transaction (the notification goes
to the ``webhook_outbox`` table of the queue's own database). A background thread
posts due notifications and records the outcome; one that is not acknowledged (2xx)
is retried with backoff, across restarts: any process that opens the queue with the
same webhook URL resumes it. Delivery is therefore at least once: a receiver should
act once per ``X-SemGrad-Guard-Delivery`` id. Redirects are never followed.

Each POST is signed: ``X-SemGrad-Guard-Signature: v1=<hex>`` is the HMAC-SHA256,
under the secret, of ``<timestamp>.<delivery id>.<body>``, with the Unix time of the
attempt in ``X-SemGrad-Guard-Timestamp``; a receiver refuses stale timestamps, so a
captured request cannot be replayed later (:func:`verify_signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..errors import ConfigError, ReviewError, WebhookDeliveryError
from .case import EscalatedCase

if TYPE_CHECKING:
    from .store import Delivery, ReviewStore

logger = logging.getLogger(__name__)

#: The header that carries ``v1=<hex HMAC>`` when a secret is set.
SIGNATURE_HEADER = "X-SemGrad-Guard-Signature"
#: The Unix time (seconds) of the attempt, covered by the signature.
TIMESTAMP_HEADER = "X-SemGrad-Guard-Timestamp"
#: The delivery id, the same on every attempt of one notification.
DELIVERY_HEADER = "X-SemGrad-Guard-Delivery"
#: Environment variable the command line reads the webhook secret from.
SECRET_ENV = "SEMGRAD_GUARD_WEBHOOK_SECRET"


class WebhookConfig(BaseModel):
    """Where to POST each decision, and how hard to try.

    The body is ``{"event": "case.decided", "delivery_id": ..., "case":
    <EscalatedCase.to_dict()>}``. Attempt ``n`` waits ``backoff * 2**(n-1)`` seconds
    (at most ``max_backoff``) after a failure; after ``attempts`` tries, or at once for
    a redirect or a client error other than 408 and 429, the delivery is marked failed.

    >>> WebhookConfig(url="http://127.0.0.1:9000/decisions").attempts
    10
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="http(s) URL that receives the POST.")
    secret: SecretStr | None = Field(default=None, description="Key for the HMAC signature.")
    timeout: float = Field(default=5.0, gt=0, le=300, description="Seconds per attempt.")
    attempts: int = Field(default=10, ge=1, le=100, description="Tries before giving up.")
    backoff: float = Field(default=0.5, ge=0, description="Seconds before the 2nd try; doubles.")
    max_backoff: float = Field(default=300.0, ge=0, description="Longest wait between tries.")
    flush_on_close: float = Field(
        default=5.0, ge=0, description="Seconds ReviewQueue.close() spends delivering what "
                                       "is due; the rest waits in the outbox.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"webhook url {url!r} is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {url!r} must be http:// or https:// with a host")
        return url

    @property
    def where(self) -> str:
        """The URL without path, query or credentials (what logs show)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def sign(secret: str | bytes, timestamp: str, delivery_id: str, body: bytes) -> str:
    """The ``X-SemGrad-Guard-Signature`` value of one attempt."""
    key = secret.encode() if isinstance(secret, str) else secret
    signed = f"{timestamp}.{delivery_id}.".encode() + body
    return "v1=" + hmac.new(key, signed, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, headers: Mapping[str, str], body: bytes, *,
                     tolerance: float = 300.0, now: float | None = None) -> bool:
    """True if ``body`` was signed with ``secret`` within ``tolerance`` seconds of now.

    ``headers`` must match names case-insensitively (as HTTP frameworks' do).

    >>> headers = {DELIVERY_HEADER: "d1", TIMESTAMP_HEADER: "1700000000",
    ...            SIGNATURE_HEADER: sign("s", "1700000000", "d1", b"{}")}
    >>> verify_signature("s", headers, b"{}", now=1700000010)
    True
    >>> verify_signature("s", headers, b"{}", now=1700009999)  # a late replay
    False
    """
    try:
        timestamp = headers[TIMESTAMP_HEADER]
        delivery_id = headers[DELIVERY_HEADER]
        given = headers[SIGNATURE_HEADER]
        sent = int(timestamp)
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, delivery_id, body), given)


Outcome = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True)
class AttemptResult:
    """What one POST achieved, and why."""

    outcome: Outcome
    detail: str


class WebhookSender:
    """Makes one signed POST of a decided case (no redirects, bounded in time).

    >>> sender = WebhookSender(WebhookConfig(url="http://127.0.0.1:9/none", timeout=0.5))
    >>> sender.post(EscalatedCase(id="c1", chain="c", question="q", answer="a"), "d1").outcome
    'retry'
    """

    def __init__(self, config: WebhookConfig) -> None:
        try:
            import httpx
        except ModuleNotFoundError as exc:
            raise ConfigError('webhooks need httpx: pip install "semgrad-guard[review]"') \
                from exc

        self.config = config
        self._httpx = httpx
        self._client = httpx.Client(follow_redirects=False, timeout=config.timeout,
                                    trust_env=False)

    @staticmethod
    def payload(case: EscalatedCase, delivery_id: str) -> bytes:
        return json.dumps({"event": "case.decided", "delivery_id": delivery_id,
                           "case": case.to_dict()}, ensure_ascii=False).encode()

    def headers(self, body: bytes, delivery_id: str, now: float | None = None) -> dict[str, str]:
        timestamp = str(int(time.time() if now is None else now))
        headers = {"Content-Type": "application/json", "User-Agent": "semgrad-guard-review",
                   "X-SemGrad-Guard-Event": "case.decided", DELIVERY_HEADER: delivery_id,
                   TIMESTAMP_HEADER: timestamp}
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.secret.get_secret_value(), timestamp,
                                              delivery_id, body)
        return headers

    def post(self, case: EscalatedCase, delivery_id: str) -> AttemptResult:
        body = self.payload(case, delivery_id)
        try:
            with self._client.stream("POST", self.config.url, content=body,
                                     headers=self.headers(body, delivery_id)) as response:
                code = response.status_code
                location = response.headers.get("location", "")
        except self._httpx.TimeoutException:
            return AttemptResult("retry", f"no answer within {self.config.timeout:g} s")
        except self._httpx.HTTPError as exc:
            return AttemptResult("retry", f"{type(exc).__name__}: {exc}")
        if 200 <= code < 300:
            return AttemptResult("delivered", f"HTTP {code}")
        if 300 <= code < 400:
            return AttemptResult("failed", f"HTTP {code} redirect to {location[:200]!r} not "
                                           f"followed; configure the final URL")
        if code >= 500 or code in (408, 429):
            return AttemptResult("retry", f"HTTP {code}")
        return AttemptResult("failed", f"HTTP {code}")

    def close(self) -> None:
        self._client.close()


class WebhookDispatcher:
    """Delivers the outbox of one store to one URL, in a background thread.

    Started by :class:`~semgrad_guard.review.ReviewQueue` when it has a webhook: it
    picks up what earlier processes left undelivered, and what other processes add
    (it looks every ``poll_interval`` seconds, and at once after a decision of its own).
    """

    def __init__(self, store: ReviewStore, config: WebhookConfig, *,
                 poll_interval: float = 1.0) -> None:
        self.store = store
        self.config = config
        self.sender = WebhookSender(config)
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookDispatcher:
        self._thread = threading.Thread(target=self._loop, name="semgrad-review-webhook",
                                        daemon=True)
        self._thread.start()
        self._wake.set()  # deliver what earlier processes left, at once
        return self

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.deliver_due()
            except ReviewError:
                logger.exception("webhook %s: cannot read the outbox", self.config.where)

    def deliver_due(self, limit: int = 20) -> int:
        """Make one attempt at every delivery that is due; returns how many were tried."""
        now = datetime.now(UTC)
        lease = timedelta(seconds=self.config.timeout + 2.0)
        due = self.store.claim_deliveries(self.config.url, now, now + lease, limit)
        for delivery in due:  # each claimed delivery is attempted: its lease says so
            self._attempt(delivery)
        return len(due)

    def _attempt(self, delivery: Delivery) -> None:
        case = self.store.get(delivery.case_id)
        if case is None:
            result = AttemptResult("failed", "the case was purged before delivery")
        else:
            result = self.sender.post(case, delivery.id)
        now = datetime.now(UTC)
        if result.outcome == "retry" and delivery.attempts < self.config.attempts:
            wait = min(self.config.backoff * 2 ** (delivery.attempts - 1), self.config.max_backoff)
            logger.warning("webhook %s for case %s failed (%s); attempt %d of %d in %.3g s",
                           self.config.where, delivery.case_id, result.detail,
                           delivery.attempts + 1, self.config.attempts, wait)
            self.store.finish_delivery(delivery.id, "pending", error=result.detail, at=now,
                                       retry_at=now + timedelta(seconds=wait))
            return
        if result.outcome == "delivered":
            self.store.finish_delivery(delivery.id, "delivered", error=None, at=now)
            return
        self.store.finish_delivery(delivery.id, "failed", error=result.detail, at=now)
        try:
            raise WebhookDeliveryError(
                f"webhook {self.config.where} did not take the decision on case "
                f"{delivery.case_id} (delivery {delivery.id}, {delivery.attempts} attempts): "
                f"{result.detail}")
        except WebhookDeliveryError:
            logger.exception("webhook delivery failed; the decision stands")

    def flush(self, timeout: float) -> int:
        """Deliver what is due for up to ``timeout`` seconds; returns how many still wait."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [d for d in self.store.deliveries("pending") if d.url == self.config.url]
            if not pending:
                return 0
            if not self.deliver_due():
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return len([d for d in self.store.deliveries("pending") if d.url == self.config.url])

    def stop(self, flush_for: float = 0.0) -> int:
        """Deliver what is due for up to ``flush_for`` seconds, then stop the thread;
        returns how many deliveries still wait in the outbox."""
        left = self.flush(flush_for) if flush_for > 0 else 0
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout + 5.0)
            self._thread = None
        self.sender.close()
        return left


def new_delivery_id() -> str:
    """A fresh delivery id (random, 32 hex digits)."""
    return uuid.uuid4().hex


def as_config(webhook: WebhookConfig | str | Any) -> WebhookConfig:
    """A ``WebhookConfig`` from a config or a URL."""
    return WebhookConfig(url=webhook) if isinstance(webhook, str) else webhook
