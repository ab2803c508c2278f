"""``semgrad-guard serve-scorer``: one scoring model shared by every application process."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve-scorer", help="serve the scorer over HTTP for other processes (RemoteScorer)",
        description="Load the model once and score answers for every client: POST /v1/score, "
                    "GET /v1/model, GET /healthz, GET /metrics (Prometheus). Every endpoint "
                    "but /healthz needs 'Authorization: Bearer <token>'; clients use "
                    "semgrad_guard.serving.RemoteScorer.")
    p.add_argument("--model", help="local folder, GGUF file or hub id (default: the offline "
                                   "default model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain"])
    p.add_argument("--method", default="semgrad", help="default headline score")
    p.add_argument("--profile", default="auto",
                   help="'auto' (cached profile, else default anchor), 'none', or a JSON path")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--token", default=None,
                   help="bearer token; prefer the SEMGRAD_GUARD_SCORER_TOKEN environment "
                        "variable (a command line shows in process lists)")
    p.add_argument("--max-batch", type=int, default=32, help="most answers per scoring pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to batch with")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from ..errors import ConfigError
    from ..model.local_model import LocalModel
    from ..scoring.semgrad import SemGradScorer
    from .client import TOKEN_ENV
    from .server import ScorerServer, ScorerServiceConfig

    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(f"the scoring service needs a token: set {TOKEN_ENV} (or --token)")
    try:
        config = ScorerServiceConfig(token=SecretStr(token), host=args.host, port=args.port,
                                     max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                     access_log=args.access_log)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    model = LocalModel.load(args.model, prompt_format=args.prompt_format, device=args.device)
    scorer = SemGradScorer(model, method=args.method,
                           profile=None if args.profile == "none" else args.profile)
    server = ScorerServer(scorer, config)
    print(f"scoring {model.name} on http://{args.host}:{args.port} (bearer token required; "
          f"Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # uvicorn stopped gracefully, then re-raised Ctrl-C: a normal stop
    return 0
