"""Run the scoring service with uvicorn: in a background thread, or as the main program."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..errors import ConfigError
from .service import ScorerMetrics, check_token, create_scorer_app

logger = logging.getLogger(__name__)


class ScorerServiceConfig(BaseModel):
    """Where the scoring service listens, its token and how it batches.

    >>> config = ScorerServiceConfig(token="a-long-random-scorer-token")
    >>> config.host, config.port, "random" in repr(config)
    ('127.0.0.1', 8766, False)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(description="Bearer token every client sends (16+ chars).")
    host: str = Field(default="127.0.0.1", description="Interface to bind; loopback only "
                      "unless a TLS proxy sits in front.")
    port: int = Field(default=8766, ge=0, le=65535, description="0 picks a free port.")
    max_batch: int = Field(default=32, ge=1, le=1024,
                           description="Most answers one batched pass scores.")
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000, description="How long the first "
                               "request of a batch waits for company.")
    access_log: bool = Field(default=False, description="Log each request (never the token).")

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class ScorerServer:
    """The scoring service on ``http://host:port``, run by uvicorn in a thread.

    >>> from semgrad_guard import LocalModel, SemGradScorer
    >>> config = ScorerServiceConfig(token="a-long-random-scorer-token", port=0)
    >>> with ScorerServer(SemGradScorer(LocalModel.load()), config) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, scorer: Any, config: ScorerServiceConfig) -> None:
        import uvicorn

        self.config = config
        self.metrics = ScorerMetrics()
        self.app = create_scorer_app(scorer, check_token(config.token.get_secret_value()),
                                     max_batch=config.max_batch,
                                     max_wait_ms=config.max_wait_ms, metrics=self.metrics)
        # log_config=None leaves the host application's logging set-up alone.
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            self.app, host=config.host, port=config.port, log_config=None, lifespan="on",
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
        return f"http://{shown}:{self.port}"

    def _warn_if_exposed(self) -> None:
        if not self.config.is_loopback:
            logger.warning("scoring service bound to %s: reachable from other machines; put "
                           "it behind TLS", self.config.host)

    def start(self, timeout: float = 30.0) -> ScorerServer:
        """Serve in a daemon thread; returns once the port is open."""
        self._warn_if_exposed()
        self._thread = threading.Thread(target=self._uvicorn.run, name="semgrad-scorer",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise ConfigError(f"the scoring service could not listen on "
                                  f"{self.config.host}:{self.config.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError("the scoring service did not start in time")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C or SIGTERM)."""
        self._warn_if_exposed()
        self._uvicorn.run()

    def __enter__(self) -> ScorerServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
