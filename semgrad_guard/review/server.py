"""Serve the review page with uvicorn: in a background thread, or as the main program."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..errors import ReviewError
from .queue import ReviewQueue
from .web import create_review_app

logger = logging.getLogger(__name__)

#: Environment variable the command line reads the review token from.
TOKEN_ENV = "SEMGRAD_GUARD_REVIEW_TOKEN"


class ReviewServerConfig(BaseModel):
    """Where the review page listens and the token that opens it.

    The token is a ``SecretStr``: it prints as ``**********`` in reprs and logs.

    >>> config = ReviewServerConfig(token="a-long-random-review-token")
    >>> config.host, config.port, "random" in repr(config)
    ('127.0.0.1', 8765, False)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(description="Shared secret reviewers log in with (16+ chars).")
    host: str = Field(default="127.0.0.1", description="Interface to bind; loopback only "
                      "unless you put TLS and a proxy in front.")
    port: int = Field(default=8765, ge=0, le=65535, description="0 picks a free port.")
    session_max_age: float = Field(default=12 * 3600, gt=0,
                                   description="Seconds a login lasts.")
    secure_cookie: bool = Field(default=False, description="HTTPS-only session cookie.")
    access_log: bool = Field(default=True, description="Log each request (never the token).")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr) -> SecretStr:
        if len(token.get_secret_value()) < 16:
            raise ValueError("the review token must be at least 16 characters; "
                             "python -c 'import secrets; print(secrets.token_urlsafe())'")
        return token

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class ReviewServer:
    """The review page on ``http://host:port/``, run by uvicorn in a background thread.

    >>> from semgrad_guard.review import open_review_queue
    >>> queue = open_review_queue("sqlite:///:memory:")
    >>> config = ReviewServerConfig(token="a-long-random-review-token", port=0)
    >>> with ReviewServer(queue, config) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, queue: ReviewQueue, config: ReviewServerConfig) -> None:
        import uvicorn

        self.queue = queue
        self.config = config
        app = create_review_app(queue, config.token.get_secret_value(),
                                session_max_age=config.session_max_age,
                                secure_cookie=config.secure_cookie)
        # log_config=None leaves the host application's logging set-up alone.
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            app, host=config.host, port=config.port, log_config=None, lifespan="off",
            access_log=config.access_log, server_header=False))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        servers = getattr(self._uvicorn, "servers", [])
        if servers and servers[0].sockets:
            return int(servers[0].sockets[0].getsockname()[1])
        return self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    def start(self, timeout: float = 10.0) -> ReviewServer:
        """Start serving in a daemon thread; returns once the port is open."""
        if not self.config.is_loopback:
            logger.warning("review page bound to %s: reachable from other machines; put it "
                           "behind TLS", self.config.host)
        self._thread = threading.Thread(target=self._uvicorn.run, name="semgrad-review-page",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise ReviewError(f"the review page could not listen on "
                                  f"{self.config.host}:{self.config.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise ReviewError("the review page did not start in time")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C or SIGTERM)."""
        if not self.config.is_loopback:
            logger.warning("review page bound to %s: reachable from other machines; put it "
                           "behind TLS", self.config.host)
        self._uvicorn.run()

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
