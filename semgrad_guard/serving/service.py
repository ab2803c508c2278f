"""The shared scoring service: one model scores the answers of every application process.

Endpoints (JSON; every one but ``/healthz`` needs ``Authorization: Bearer <token>``):

- ``POST /v1/score``: ``{"items": [...], "method": ...}`` -> ``{"results": [...]}``;
  items and results as :mod:`semgrad_guard.serving.wire` describes. Items of requests
  that arrive together are scored in one batched pass.
- ``GET /v1/model``: the model, its anchor, and its tokenizer and template identity.
- ``GET /healthz``: ``{"status": "ok"}`` once the model is loaded (no token: for
  load balancers and orchestrators).
- ``GET /metrics``: Prometheus metrics: requests by endpoint and status, answers
  scored, batch sizes, request and batch latency, errors by type, answers in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from ..model.batching import MicroBatcher
from ..review.auth import check_token_strength
from .backend import ItemScorer, Outcome
from .wire import ScoreItem, ScoreRequest, error_to_dict, result_to_dict

#: The largest request body the service reads.
MAX_BODY_BYTES = 16 << 20
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ScorerMetrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("semgrad_scorer_requests", "HTTP requests by endpoint and "
                                "status.", ["endpoint", "status"], registry=self.registry)
        self.answers = Counter("semgrad_scorer_answers", "Answers scored, by input kind "
                               "(ids, text, served).", ["kind"], registry=self.registry)
        self.errors = Counter("semgrad_scorer_errors", "Answers or requests that failed, by "
                              "error type.", ["type"], registry=self.registry)
        self.batch_size = Histogram("semgrad_scorer_batch_size", "Answers per batched "
                                    "scoring pass.", buckets=_BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_seconds = Histogram("semgrad_scorer_batch_seconds", "Seconds per batched "
                                       "scoring pass.", registry=self.registry)
        self.latency = Histogram("semgrad_scorer_request_seconds", "Seconds from request to "
                                 "response.", ["endpoint"], registry=self.registry)
        self.in_flight = Gauge("semgrad_scorer_answers_in_flight", "Answers received and not "
                               "yet scored.", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def check_token(token: str) -> str:
    """The service token, refused when too short or too uniform to resist guessing (the
    review server's rule)."""
    return check_token_strength(token, "scorer")


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def create_scorer_app(scorer: Any, token: str, *, max_batch: int = 32,
                      max_wait_ms: float = 5.0, metrics: ScorerMetrics | None = None) -> Any:
    """The scoring service as a Starlette app (serve it with uvicorn, or use
    :class:`~semgrad_guard.serving.ScorerServer`).

    ``scorer`` is a ``SemGradScorer``; its method is the default headline score.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    token = check_token(token)
    backend = ItemScorer(scorer)
    metrics = metrics or ScorerMetrics()

    batcher = MicroBatcher(max_batch=max_batch, max_wait=max_wait_ms / 1000,
                           name="semgrad-scoring-service")

    def score_together(requests: list[tuple[ScoreItem, str | None]]) -> list[Outcome]:
        start = time.perf_counter()
        try:
            return backend.score_requests(requests)
        finally:
            metrics.observe_batch(len(requests), time.perf_counter() - start)

    Handler = Callable[[Request], Awaitable[Response]]

    def endpoint(name: str, handler: Handler, *, protected: bool = True) -> Handler:
        async def wrapped(request: Request) -> Response:
            start = time.perf_counter()
            if protected and not bearer_matches(request.headers.get("authorization"), token):
                response: Response = JSONResponse(
                    {"error": {"type": "Unauthorized", "message": "missing or wrong bearer "
                               "token"}}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            else:
                try:
                    response = await handler(request)
                except Exception as exc:  # reported to the client and counted, never lost
                    metrics.errors.labels(type(exc).__name__).inc()
                    response = JSONResponse({"error": error_to_dict(exc)}, status_code=500)
            metrics.requests.labels(name, str(response.status_code)).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - start)
            return response
        return wrapped

    def bad_request(message: str, status: int = 400) -> Response:
        metrics.errors.labels("BadRequest").inc()
        return JSONResponse({"error": {"type": "BadRequest", "message": message}},
                            status_code=status)

    async def score(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return bad_request(f"request body over {MAX_BODY_BYTES} bytes", 413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return bad_request(f"request body over {MAX_BODY_BYTES} bytes", 413)
        try:
            parsed = ScoreRequest.model_validate(json.loads(body))
        except json.JSONDecodeError as exc:
            return bad_request(f"the body is not JSON: {exc}")
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            return bad_request(f"bad score request: {problems}", 422)
        items = parsed.items
        metrics.in_flight.inc(len(items))
        try:
            outcomes = await asyncio.gather(*(batcher.acall(score_together, (item, parsed.method))
                                              for item in items))
        finally:
            metrics.in_flight.dec(len(items))
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Exception):
                metrics.errors.labels(type(outcome).__name__).inc()
            else:
                metrics.answers.labels(item.kind).inc()
        return JSONResponse({"results": [result_to_dict(o) for o in outcomes]})

    async def model_info(request: Request) -> Response:
        return JSONResponse(backend.info())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": backend.model.name})

    async def metrics_page(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(batcher.close)

    app = Starlette(routes=[
        Route("/v1/score", endpoint("score", score), methods=["POST"]),
        Route("/v1/model", endpoint("model", model_info), methods=["GET"]),
        Route("/healthz", endpoint("healthz", health, protected=False), methods=["GET"]),
        Route("/metrics", endpoint("metrics", metrics_page), methods=["GET"]),
    ], lifespan=lifespan)
    app.state.metrics = metrics
    app.state.batcher = batcher
    return app
