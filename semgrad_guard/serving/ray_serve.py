"""The scorer as a Ray Serve deployment: replicas, dynamic batching, autoscaling.

It speaks the scoring service's HTTP API (``POST /v1/score``, ``GET /v1/model``,
``GET /healthz``), so :class:`~semgrad_guard.serving.RemoteScorer` talks to it as to
``semgrad-guard serve-scorer``; Ray code can also call the deployment handle's
``score(item)`` directly. Every replica loads the model once; ``@serve.batch`` gathers
the items of concurrent requests routed to a replica into one scoring pass.

On GPU nodes give each replica a GPU and let Serve scale on queued requests::

    app = scorer_app(device="cuda", ray_actor_options={"num_gpus": 1, "num_cpus": 2},
                     autoscaling_config=GPU_AUTOSCALING, max_batch_size=64)

:data:`GPU_AUTOSCALING` keeps one warm replica, adds replicas when more than
``target_ongoing_requests`` requests wait per replica (a batch's worth), and releases
them after five idle minutes, since a replica takes a while to load its model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .backend import ItemScorer
from .ray_support import require
from .service import bearer_matches, check_token
from .wire import ScoreItem, ScoreRequest, result_to_dict

#: An autoscaling configuration for GPU nodes (one replica per GPU).
GPU_AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "initial_replicas": 1,
    "max_replicas": 8,
    # About one batch in flight per replica before Serve adds one.
    "target_ongoing_requests": 32,
    "upscale_delay_s": 10,
    # Loading the model takes tens of seconds: keep replicas through short lulls.
    "downscale_delay_s": 300,
}


def scorer_app(model: str | None = None, *, token: str, method: str = "semgrad",
               profile: str | None = "auto", device: str | None = None,
               num_replicas: int = 1, max_batch_size: int = 16,
               batch_wait_timeout_s: float = 0.01,
               autoscaling_config: dict[str, Any] | None = None,
               ray_actor_options: dict[str, Any] | None = None) -> Any:
    """A Ray Serve application scoring with ``model`` (default: the offline default
    model); run it with ``serve.run(app)``.

    ``autoscaling_config`` (e.g. :data:`GPU_AUTOSCALING`) replaces ``num_replicas``.
    ``ray_actor_options`` sets each replica's resources (default one CPU).

    >>> from ray import serve                                         # doctest: +SKIP
    >>> handle = serve.run(scorer_app(token="a-long-random-scorer-token",
    ...                               num_replicas=2))               # doctest: +SKIP
    """
    serve = require("ray.serve")
    token = check_token(token)
    options: dict[str, Any] = {"ray_actor_options": ray_actor_options or {"num_cpus": 1},
                               "max_ongoing_requests": max(2 * max_batch_size, 8)}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas

    @serve.deployment(name="SemGradScorer", **options)
    class ScorerDeployment:
        def __init__(self) -> None:
            from ..model.local_model import LocalModel
            from ..scoring.semgrad import SemGradScorer

            lm = LocalModel.load(model, device=device)
            self.backend = ItemScorer(SemGradScorer(lm, method=method, profile=profile))
            self.batches: list[int] = []

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        async def _score(self, requests: list[tuple[ScoreItem, str | None]]
                         ) -> list[dict[str, Any]]:
            self.batches.append(len(requests))
            outcomes = await asyncio.to_thread(self.backend.score_requests, requests)
            return [result_to_dict(o) for o in outcomes]

        async def score(self, item: dict[str, Any], method: str | None = None
                        ) -> dict[str, Any]:
            """One item (a :class:`ScoreItem` as a dict) -> ``{"score": ...}`` or
            ``{"error": ...}``; concurrent calls share a batch. A malformed item fails
            its own call (checked before it joins a batch), never its batch-mates'."""
            checked = ScoreItem.model_validate(item)
            return await self._score((checked, method))  # type: ignore[no-any-return]

        def batch_sizes(self) -> list[int]:
            """Items per scoring pass so far, on this replica."""
            return list(self.batches)

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import JSONResponse

            path = request.url.path.rstrip("/")
            if path.endswith("/healthz"):
                return JSONResponse({"status": "ok", "model": self.backend.model.name})
            if not bearer_matches(request.headers.get("authorization"), token):
                return JSONResponse({"error": {"type": "Unauthorized", "message": "missing "
                                               "or wrong bearer token"}}, status_code=401)
            if path.endswith("/v1/model"):
                return JSONResponse(self.backend.info())
            if not path.endswith("/v1/score") or request.method != "POST":
                return JSONResponse({"error": {"type": "NotFound", "message": path}},
                                    status_code=404)
            try:
                parsed = ScoreRequest.model_validate(json.loads(await request.body()))
            except ValueError as exc:  # bad JSON or a bad item
                return JSONResponse({"error": {"type": "BadRequest", "message": str(exc)}},
                                    status_code=422)
            results = await asyncio.gather(*(self._score((item, parsed.method))
                                             for item in parsed.items))
            return JSONResponse({"results": list(results)})

    return ScorerDeployment.bind()  # type: ignore[attr-defined]
