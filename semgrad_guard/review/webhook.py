"""Tell another service about each decision: a JSON POST to a configured URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..errors import WebhookDeliveryError
from .case import EscalatedCase

logger = logging.getLogger(__name__)

#: The header that carries ``sha256=<hex HMAC of the body>`` when a secret is set.
SIGNATURE_HEADER = "X-SemGrad-Guard-Signature"


class WebhookConfig(BaseModel):
    """Where to POST each decision, and how hard to try.

    The body is ``{"event": "case.decided", "case": <EscalatedCase.to_dict()>}``. With a
    ``secret``, the receiver can check ``X-SemGrad-Guard-Signature`` (``sha256=`` and
    the hex HMAC-SHA256 of the raw body under the secret).

    >>> WebhookConfig(url="http://127.0.0.1:9000/decisions").attempts
    3
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="http(s) URL that receives the POST.")
    secret: SecretStr | None = Field(default=None, description="Key for the body's HMAC.")
    timeout: float = Field(default=5.0, gt=0, description="Seconds per attempt.")
    attempts: int = Field(default=3, ge=1, le=10, description="Tries before giving up.")
    backoff: float = Field(default=0.5, ge=0, description="Seconds before the 2nd try; doubles.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {url!r} must be http:// or https:// with a host")
        return url


class WebhookNotifier:
    """A decision callback that POSTs the decided case to ``config.url``.

    Server errors and network failures are retried with backoff; client errors (4xx)
    are not, since a retry would get the same answer. After the last attempt it raises
    ``WebhookDeliveryError``; the queue logs that, and the decision stays recorded.

    >>> notify = WebhookNotifier(WebhookConfig(url="http://127.0.0.1:9/none", attempts=1,
    ...                                        timeout=0.5))
    >>> callable(notify)
    True
    """

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        # Logged instead of the URL, which may carry credentials or a secret path.
        self._where = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else "")

    def payload(self, case: EscalatedCase) -> bytes:
        return json.dumps({"event": "case.decided", "case": case.to_dict()},
                          ensure_ascii=False).encode()

    def __call__(self, case: EscalatedCase) -> None:
        body = self.payload(case)
        headers = {"Content-Type": "application/json", "User-Agent": "semgrad-guard-review",
                   "X-SemGrad-Guard-Event": "case.decided"}
        if self.config.secret is not None:
            key = self.config.secret.get_secret_value().encode()
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        delay = self.config.backoff
        last = ""
        for attempt in range(1, self.config.attempts + 1):
            request = urllib.request.Request(self.config.url, data=body, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                exc.close()
                last = f"HTTP {exc.code}"
                if exc.code < 500:
                    break
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if attempt < self.config.attempts:
                logger.warning("webhook %s for case %s failed (%s), retrying", self._where,
                               case.id, last)
                time.sleep(delay)
                delay *= 2
        raise WebhookDeliveryError(
            f"webhook {self._where} did not take the decision on case {case.id}: {last}")
