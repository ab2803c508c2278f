"""Who may use the review page: one shared token, then a server-side session.

The token is never stored in the cookie, a URL or a log. Logging in with it creates a
session in the queue's database and gives the browser a cookie that carries only the
session's random secret, signed with ``itsdangerous`` under a key derived from the
token (so rotating the token ends every session). A session ends at logout (revoked in
the database: the cookie is worthless from then on, wherever a copy went), after
``max_age``, or when the token changes. Each form carries a CSRF value
derived from the session. Scripts may skip the cookie and send
``Authorization: Bearer <token>`` instead. Failed logins are throttled per client.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..errors import ConfigError
from .store import ReviewStore

#: Name of the session cookie the review page sets after a token login.
SESSION_COOKIE = "semgrad_review_session"
#: The shortest review token accepted, and how many distinct characters it needs.
MIN_TOKEN_LENGTH = 16
MIN_TOKEN_DISTINCT = 8

_MAX_REVIEWER_LENGTH = 64


def clean_reviewer_name(name: str) -> str | None:
    """The name as shown in decisions, or ``None`` if it is empty or has control characters."""
    name = name.strip()
    if not name or len(name) > _MAX_REVIEWER_LENGTH or not name.isprintable():
        return None
    return name


def check_token_strength(token: str, what: str = "review") -> str:
    """``token`` if it is long and varied enough to resist guessing, else ``ConfigError``
    (naming it as the ``what`` token)."""
    if len(token) < MIN_TOKEN_LENGTH or len(set(token)) < MIN_TOKEN_DISTINCT:
        raise ConfigError(
            f"the {what} token must be at least {MIN_TOKEN_LENGTH} characters with at least "
            f"{MIN_TOKEN_DISTINCT} different ones; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


class LoginThrottle:
    """At most ``limit`` failed logins per client in ``window`` seconds (and ``4 * limit``
    from all clients together); past that, logins are refused until the window slides.

    >>> throttle = LoginThrottle(limit=2, window=60)
    >>> throttle.failed("10.0.0.1", now=0); throttle.failed("10.0.0.1", now=1)
    >>> throttle.retry_after("10.0.0.1", now=2), throttle.retry_after("10.0.0.2", now=2)
    (58, 0)
    """

    def __init__(self, limit: int = 5, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def retry_after(self, client: str, *, now: float | None = None) -> int:
        """Seconds this client must wait before its next try (0: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [0.0]
            mine = self._failures.get(client)
            for times, limit in ((mine, self.limit), (self._all, 4 * self.limit)):
                if times is None:
                    continue
                self._trim(times, now)
                if len(times) >= limit:
                    waits.append(times[-limit] + self.window - now)
            return int(max(waits) + 0.999)

    def failed(self, client: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 10_000:  # forget the oldest clients, bounded memory
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(client, deque()).append(now)
            self._all.append(now)


class ReviewerAuth:
    """Checks the review token, and issues, checks and revokes sessions.

    >>> from semgrad_guard.review import SQLiteReviewStore
    >>> auth = ReviewerAuth("a-long-random-review-token", SQLiteReviewStore(":memory:"))
    >>> auth.token_matches("a-long-random-review-token"), auth.token_matches("guess")
    (True, False)
    >>> cookie = auth.start_session("alice")
    >>> auth.reviewer_from_cookie(cookie)
    'alice'
    >>> auth.csrf_matches(cookie, auth.csrf_value(cookie))
    True
    >>> auth.end_session(cookie); auth.reviewer_from_cookie(cookie) is None
    True
    """

    def __init__(self, token: str, store: ReviewStore, *, max_age: float = 12 * 3600) -> None:
        check_token_strength(token)
        self._token = token.encode()
        self._key = hashlib.sha256(b"semgrad-guard review page\x00" + self._token).digest()
        self._cookies = URLSafeTimedSerializer(self._key, salt="semgrad-guard review session")
        self.store = store
        self.max_age = max_age

    def token_matches(self, given: str | None) -> bool:
        """Constant-time comparison, so response times do not leak the token."""
        if given is None:
            return False
        return hmac.compare_digest(given.encode(errors="replace"), self._token)

    def bearer_matches(self, authorization: str | None) -> bool:
        """True for an ``Authorization: Bearer <token>`` header carrying the token."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    @staticmethod
    def _session_key(secret: str) -> str:
        # The database holds a hash: reading it does not give anyone a session.
        return hashlib.sha256(secret.encode()).hexdigest()

    def _secret(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            secret = self._cookies.loads(cookie, max_age=int(self.max_age))
        except BadSignature:  # also expired (SignatureExpired is a BadSignature)
            return None
        return secret if isinstance(secret, str) else None

    def start_session(self, reviewer: str) -> str:
        """Record a new session for ``reviewer``; returns the cookie value."""
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        self.store.add_session(self._session_key(secret), reviewer, now,
                               now + timedelta(seconds=self.max_age))
        return self._cookies.dumps(secret)

    def reviewer_from_cookie(self, cookie: str | None) -> str | None:
        """The reviewer of a validly signed cookie whose session is live; else ``None``."""
        secret = self._secret(cookie)
        if secret is None:
            return None
        return self.store.session_reviewer(self._session_key(secret), datetime.now(UTC))

    def end_session(self, cookie: str | None) -> None:
        """Revoke the cookie's session (logout): no copy of the cookie works afterwards."""
        secret = self._secret(cookie)
        if secret is not None:
            self.store.revoke_sessions(self._session_key(secret), datetime.now(UTC))

    def csrf_value(self, cookie: str) -> str:
        """The value every form posted with this session cookie must carry."""
        return hmac.new(self._key, b"csrf\x00" + cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_matches(self, cookie: str, given: str | None) -> bool:
        if not given:
            return False
        return hmac.compare_digest(given.encode(errors="replace"),
                                   self.csrf_value(cookie).encode())
