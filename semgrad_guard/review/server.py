"""Serve the review page with uvicorn: in a background thread, or as the main program."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ..errors import ConfigError, ReviewError
from ..server_thread import ServerThread, is_loopback
from .auth import check_token_strength
from .queue import ReviewQueue
from .web import create_review_app

logger = logging.getLogger(__name__)

#: Environment variable the command line reads the review token from.
TOKEN_ENV = "SEMGRAD_GUARD_REVIEW_TOKEN"


class ReviewServerConfig(BaseModel):
    """Where the review page listens, the name it answers to, and the token that opens it.

    The token is a ``SecretStr``: it prints as ``**********`` in reprs and logs.
    On a loopback address the page answers as ``review-<port>.localhost`` (browsers
    resolve ``*.localhost`` to the machine itself), so that its session cookie is not
    sent to other local servers; ``public_host="127.0.0.1"`` gives that up for
    browsers that do not resolve such names. A non-loopback address needs TLS
    (``ssl_certfile`` and ``ssl_keyfile``; the cookie is then Secure), or
    ``allow_plain_http=True`` when a TLS proxy in front of the page terminates HTTPS.

    >>> config = ReviewServerConfig(token="a-long-random-review-token")
    >>> config.host, config.port, "random" in repr(config)
    ('127.0.0.1', 8765, False)
    >>> ReviewServerConfig(token="a-long-random-review-token", host="0.0.0.0")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for ReviewServerConfig
      Value error, binding 0.0.0.0 (not loopback) serves the page to the network: give ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(description="Shared secret reviewers log in with (16+ chars).")
    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(default=8765, ge=0, le=65535, description="0 picks a free port.")
    public_host: str | None = Field(
        default=None, description="The host name pages answer to ({port} is replaced); "
                                  "default review-{port}.localhost on loopback, else host.")
    session_max_age: float = Field(default=12 * 3600, gt=0,
                                   description="Seconds a login lasts.")
    secure_cookie: bool | None = Field(
        default=None, description="HTTPS-only session cookie (default: on with TLS).")
    ssl_certfile: str | None = Field(default=None, description="TLS certificate (PEM).")
    ssl_keyfile: str | None = Field(default=None, description="TLS private key (PEM).")
    allow_plain_http: bool = Field(
        default=False, description="Serve a non-loopback address without TLS (behind a "
                                   "proxy that terminates HTTPS).")
    login_attempts: int = Field(default=5, ge=1, description="Failed logins per client "
                                                             "per login_window.")
    login_window: float = Field(default=60.0, gt=0, description="Seconds.")
    access_log: bool = Field(default=True, description="Log each request (never the token).")

    @field_validator("token")
    @classmethod
    def _strong_enough(cls, token: SecretStr) -> SecretStr:
        try:
            check_token_strength(token.get_secret_value())
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return token

    @model_validator(mode="after")
    def _safe_binding(self) -> ReviewServerConfig:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both ssl_certfile and ssl_keyfile")
        if not self.is_loopback and not self.tls and not self.allow_plain_http:
            raise ValueError(
                f"binding {self.host} (not loopback) serves the page to the network: give "
                "ssl_certfile and ssl_keyfile (--tls-cert/--tls-key), or allow_plain_http "
                "(--allow-plain-http) when a proxy in front terminates HTTPS")
        return self

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def page_host(self) -> str | None:
        """The host name the pages answer to (``{port}`` still unfilled); ``None``: any."""
        if self.public_host is not None:
            return self.public_host
        return "review-{port}.localhost" if self.is_loopback else None

    @property
    def cookie_secure(self) -> bool:
        return self.tls if self.secure_cookie is None else self.secure_cookie


class ReviewServer(ServerThread):
    """The review page on ``http://host:port/``, run by uvicorn in a background thread.

    >>> from semgrad_guard.review import open_review_queue
    >>> queue = open_review_queue("sqlite:///:memory:")
    >>> config = ReviewServerConfig(token="a-long-random-review-token", port=0)
    >>> with ReviewServer(queue, config) as server:
    ...     server.url == f"http://review-{server.port}.localhost:{server.port}/"
    True
    """

    what = "the review page"
    error = ReviewError

    def __init__(self, queue: ReviewQueue, config: ReviewServerConfig) -> None:
        self.queue = queue
        self.config = config
        app = create_review_app(queue, config.token.get_secret_value(),
                                session_max_age=config.session_max_age,
                                secure_cookie=config.cookie_secure,
                                public_host=config.page_host,
                                login_attempts=config.login_attempts,
                                login_window=config.login_window)
        super().__init__(app, config.host, config.port, access_log=config.access_log,
                         thread_name="semgrad-review-page", ssl_certfile=config.ssl_certfile,
                         ssl_keyfile=config.ssl_keyfile)

    @property
    def url(self) -> str:
        """Where reviewers open the page (the public host name)."""
        host = (self.config.page_host or self.config.host).format(port=self.port)
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.config.tls else 'http'}://{shown}:{self.port}/"

    @property
    def api_url(self) -> str:
        """Where scripts reach the JSON API (the bound address)."""
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.config.tls else 'http'}://{shown}:{self.port}/"

    def _warn(self) -> None:
        if not self.config.is_loopback and not self.config.tls:
            logger.warning("review page bound to %s without TLS (allow_plain_http): only "
                           "behind a proxy that terminates HTTPS", self.config.host)
