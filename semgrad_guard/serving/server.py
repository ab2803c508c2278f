"""Run the scoring service with uvicorn: in a background thread, or as the main program."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..errors import ConfigError
from ..server_thread import ServerThread
from .service import ScorerMetrics, create_scorer_app


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


class ScorerServer(ServerThread):
    """The scoring service on ``http://host:port``, run by uvicorn in a thread.

    >>> from semgrad_guard import LocalModel, SemGradScorer
    >>> config = ScorerServiceConfig(token="a-long-random-scorer-token", port=0)
    >>> with ScorerServer(SemGradScorer(LocalModel.load()), config) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    what = "the scoring service"
    error = ConfigError

    def __init__(self, scorer: Any, config: ScorerServiceConfig) -> None:
        self.config = config
        self.metrics = ScorerMetrics()
        self.app = create_scorer_app(scorer, config.token.get_secret_value(),
                                     max_batch=config.max_batch,
                                     max_wait_ms=config.max_wait_ms, metrics=self.metrics)
        super().__init__(self.app, config.host, config.port, access_log=config.access_log,
                         lifespan="on", thread_name="semgrad-scorer")

    @property
    def url(self) -> str:
        return self.root_url
