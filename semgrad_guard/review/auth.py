"""Who may use the review page: one shared token, then a signed session cookie.

The token is never stored in the cookie, a URL or a log. Logging in with it gives a
cookie ``<base64 issued-at:reviewer>.<HMAC>`` signed with a key derived from the
token, so rotating the token ends every session; each form carries a CSRF value
derived from the session. Scripts may skip the cookie and send
``Authorization: Bearer <token>`` instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

#: Name of the session cookie the review page sets after a token login.
SESSION_COOKIE = "semgrad_review_session"

_MAX_REVIEWER_LENGTH = 64


def clean_reviewer_name(name: str) -> str | None:
    """The name as shown in decisions, or ``None`` if it is empty or has control characters."""
    name = name.strip()
    if not name or len(name) > _MAX_REVIEWER_LENGTH or not name.isprintable():
        return None
    return name


class ReviewerAuth:
    """Checks the review token and issues and checks session cookies and CSRF values.

    >>> auth = ReviewerAuth("a-long-random-review-token")
    >>> auth.token_matches("a-long-random-review-token"), auth.token_matches("guess")
    (True, False)
    >>> cookie = auth.session_cookie("alice")
    >>> auth.reviewer_from_cookie(cookie)
    'alice'
    >>> auth.csrf_matches(cookie, auth.csrf_value(cookie))
    True
    """

    def __init__(self, token: str, *, max_age: float = 12 * 3600) -> None:
        if not token:
            raise ValueError("the review token must not be empty")
        self._token = token.encode()
        self._key = hashlib.sha256(b"semgrad-guard review page\x00" + self._token).digest()
        self.max_age = max_age

    def token_matches(self, given: str | None) -> bool:
        """Constant-time comparison, so response times do not leak the token."""
        if given is None:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    def bearer_matches(self, authorization: str | None) -> bool:
        """True for an ``Authorization: Bearer <token>`` header carrying the token."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def _sign(self, purpose: bytes, payload: bytes) -> str:
        return hmac.new(self._key, purpose + b"\x00" + payload, hashlib.sha256).hexdigest()

    def session_cookie(self, reviewer: str, *, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        payload = f"{issued}:{reviewer}".encode()
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._sign(b'session', payload)}"

    def reviewer_from_cookie(self, cookie: str | None, *, now: float | None = None) -> str | None:
        """The reviewer a valid, unexpired cookie names; ``None`` for anything else."""
        if not cookie or "." not in cookie:
            return None
        encoded, _, signature = cookie.rpartition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(signature.encode(), self._sign(b"session", payload).encode()):
            return None
        issued, _, reviewer = payload.decode(errors="replace").partition(":")
        if not issued.isdigit():
            return None
        age = (time.time() if now is None else now) - int(issued)
        if age < -60 or age > self.max_age:
            return None
        return reviewer or None

    def csrf_value(self, cookie: str) -> str:
        """The value every form posted with this session cookie must carry."""
        return self._sign(b"csrf", cookie.encode())

    def csrf_matches(self, cookie: str, given: str | None) -> bool:
        if not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_value(cookie).encode())
