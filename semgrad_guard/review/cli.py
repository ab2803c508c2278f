"""``semgrad-guard review``: work the review queue from a terminal.

::

    semgrad-guard review list [--status pending] [--chain support-rag] [--json]
    semgrad-guard review show ID [--json]        (ID: the case id, or a unique prefix of it)
    semgrad-guard review approve ID [--reviewer alice]
    semgrad-guard review edit ID --answer "corrected text"    (--answer - reads stdin)
    semgrad-guard review reject ID [--reason "wrong policy"]
    semgrad-guard review purge --before 2025-01-01 [--include-pending]
    SEMGRAD_GUARD_REVIEW_TOKEN=... semgrad-guard review serve [--host 127.0.0.1] [--port 8765]

Every sub-command takes ``--queue URL`` (default ``$SEMGRAD_GUARD_REVIEW_QUEUE``, else
``<cache>/review.db``), refused when it names a queue file that does not exist unless
``--create`` is given, and ``--webhook-url`` for decisions, signed with the secret in
``$SEMGRAD_GUARD_WEBHOOK_SECRET`` (or ``--webhook-secret``). A case ``ID`` may be a
unique prefix of at least 4 characters; a prefix several cases share is an error
listing them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigError
from .case import CASE_STATUSES, EscalatedCase
from .queue import ReviewQueue, open_review_queue
from .terminal import json_for_terminal, shown
from .webhook import SECRET_ENV

#: Environment variable naming the queue when ``--queue`` is not given.
QUEUE_ENV = "SEMGRAD_GUARD_REVIEW_QUEUE"


def register(subparsers: Any) -> None:
    """Add the ``review`` command and its sub-commands to the top-level parser."""
    review = subparsers.add_parser(
        "review", help="list, show and decide escalated cases; serve the review page",
        description="Work the human review queue of escalated answers.")
    commands = review.add_subparsers(dest="review_command", required=True, metavar="ACTION")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--queue", default=os.environ.get(QUEUE_ENV),
                        help=f"queue URL: sqlite:///path.db or postgresql://...; default "
                             f"${QUEUE_ENV}, else <cache>/review.db")
    common.add_argument("--create", action="store_true",
                        help="create the queue's SQLite file if it does not exist (without "
                             "it, a queue file that does not exist is an error, so that a "
                             "mistyped --queue never makes an empty queue)")
    common.add_argument("--webhook-url", default=None,
                        help="POST each decision to this URL (from a durable outbox: what "
                             "this command cannot deliver, a later one does)")
    common.add_argument("--webhook-secret", default=None,
                        help=f"key that signs each webhook POST; prefer the {SECRET_ENV} "
                             "environment variable, since other users can see command lines")
    deciding = argparse.ArgumentParser(add_help=False)
    deciding.add_argument("--reviewer", default=None,
                          help="name recorded with the decision (default: your login)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    p = commands.add_parser("list", parents=[common, as_json], help="list cases, oldest first")
    p.add_argument("--status", choices=[*CASE_STATUSES, "all"], default="pending")
    p.add_argument("--chain", default=None, help="only cases from this chain")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_list)

    p = commands.add_parser("show", parents=[common, as_json], help="show one case in full")
    p.add_argument("case_id", metavar="ID", help="the case id, or a unique prefix of it")
    p.set_defaults(func=_show)

    p = commands.add_parser("approve", parents=[common, deciding, as_json],
                            help="approve the answer as it is")
    p.add_argument("case_id", metavar="ID", help="the case id, or a unique prefix of it")
    p.set_defaults(func=_approve)

    p = commands.add_parser("edit", parents=[common, deciding, as_json],
                            help="replace the answer and approve the new text")
    p.add_argument("case_id", metavar="ID", help="the case id, or a unique prefix of it")
    p.add_argument("--answer", required=True, help="the corrected answer; - reads stdin")
    p.add_argument("--reason", default=None, help="optional note on the edit")
    p.set_defaults(func=_edit)

    p = commands.add_parser("reject", parents=[common, deciding, as_json],
                            help="reject the answer")
    p.add_argument("case_id", metavar="ID", help="the case id, or a unique prefix of it")
    p.add_argument("--reason", default=None, help="why the answer was rejected")
    p.set_defaults(func=_reject)

    p = commands.add_parser("purge", parents=[common],
                            help="delete old cases (and audit records): data retention")
    p.add_argument("--before", required=True, type=moment,
                   help="delete what was decided before this time: 2025-01-31, "
                        "2025-01-31T12:00:00+00:00, or 90d (90 days ago)")
    p.add_argument("--include-pending", action="store_true",
                   help="also delete cases still pending that were escalated before then")
    p.set_defaults(func=_purge)

    p = commands.add_parser("serve", parents=[common], help="serve the review page")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=None,
                   help="review token; prefer the SEMGRAD_GUARD_REVIEW_TOKEN environment "
                        "variable, since other users can see command lines")
    p.add_argument("--public-host", default=None,
                   help="the host name reviewers open (default review-PORT.localhost on "
                        "loopback, which keeps the session cookie from other local servers)")
    p.add_argument("--tls-cert", default=None, help="TLS certificate (PEM) to serve HTTPS")
    p.add_argument("--tls-key", default=None, help="TLS private key (PEM)")
    p.add_argument("--secure-cookie", action="store_true", default=None,
                   help="HTTPS-only session cookie (on by default with --tls-cert)")
    p.add_argument("--allow-plain-http", action="store_true",
                   help="serve a non-loopback --host without TLS (a proxy in front must "
                        "terminate HTTPS)")
    p.set_defaults(func=_serve)


def _open(args: argparse.Namespace) -> ReviewQueue:
    webhook = None
    if args.webhook_secret and args.webhook_url is None:
        raise ConfigError("--webhook-secret needs --webhook-url")
    secret = args.webhook_secret or os.environ.get(SECRET_ENV) or None
    if args.webhook_url is not None:
        from pydantic import SecretStr, ValidationError

        from .webhook import WebhookConfig
        try:
            webhook = WebhookConfig(url=args.webhook_url,
                                    secret=None if secret is None else SecretStr(secret))
        except ValidationError as exc:
            problems = "; ".join(error["msg"].removeprefix("Value error, ")
                                 for error in exc.errors(include_url=False))
            raise ConfigError(f"--webhook-url: {problems}") from None
    return open_review_queue(args.queue, webhook=webhook, create=args.create)


def _list(args: argparse.Namespace) -> int:
    with _open(args) as queue:
        status = None if args.status == "all" else args.status
        cases = queue.list(status=status, chain=args.chain, limit=args.limit)
    if args.json:
        print(json_for_terminal([case.to_dict() for case in cases]))
        return 0
    if not cases:
        print(f"no {'' if status is None else status + ' '}cases")
        return 0
    print(f"{'ID':32}  {'STATUS':8}  {'ESCALATED (UTC)':19}  {'SCORE':>10}  {'CHAIN':16}  QUESTION")
    for case in cases:
        score = "-" if case.score is None else f"{case.score:.4g}"
        print(f"{shown(case.id):32}  {case.status:8}  {case.created_at:%Y-%m-%d %H:%M:%S}  "
              f"{score:>10}  {_one_line(case.chain, 16):16}  {_one_line(case.question, 60)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _open(args) as queue:
        _print_case(queue.get(args.case_id), args.json)
    return 0


def _approve(args: argparse.Namespace) -> int:
    with _open(args) as queue:
        _print_case(queue.approve(args.case_id, reviewer=args.reviewer),
                    args.json)
    return 0


def _edit(args: argparse.Namespace) -> int:
    answer = sys.stdin.read() if args.answer == "-" else args.answer
    if not answer.strip():
        raise ConfigError("--answer: the edited answer must not be empty")
    with _open(args) as queue:
        _print_case(queue.edit(args.case_id, answer=answer, reviewer=args.reviewer,
                               reason=args.reason), args.json)
    return 0


def _reject(args: argparse.Namespace) -> int:
    with _open(args) as queue:
        _print_case(queue.reject(args.case_id, reviewer=args.reviewer, reason=args.reason),
                    args.json)
    return 0


def moment(text: str) -> datetime:
    """A ``--before`` value: an ISO date or time (UTC unless it says), or ``<N>d`` ago."""
    if text.endswith("d") and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(text[:-1]))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a date (2025-01-31), a time (2025-01-31T12:00:00+00:00) "
            "or a number of days ago (90d)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _purge(args: argparse.Namespace) -> int:
    with _open(args) as queue:
        deleted = queue.purge(args.before, include_pending=args.include_pending)
        print(f"deleted {deleted} case(s) from before {args.before:%Y-%m-%d %H:%M:%S} UTC "
              f"in {queue.location}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pydantic import SecretStr, ValidationError

    from .server import TOKEN_ENV, ReviewServer, ReviewServerConfig

    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(f"the review page needs a token: set {TOKEN_ENV} (or --token)")
    try:
        config = ReviewServerConfig(
            token=SecretStr(token), host=args.host, port=args.port,
            public_host=args.public_host, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
            secure_cookie=args.secure_cookie, allow_plain_http=args.allow_plain_http)
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ")
                             for error in exc.errors(include_url=False))
        raise ConfigError(problems) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    queue = _open(args)
    try:
        server = ReviewServer(queue, config)
        print(f"review page for {queue.location} on {server.url} (log in with the review "
              f"token; scripts: {server.api_url}api/cases; Ctrl-C stops)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises Ctrl-C: that is a normal stop.
        pass
    finally:
        queue.close()
    return 0


def _one_line(text: str, width: int) -> str:
    flat = shown(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_case(case: EscalatedCase, as_json: bool) -> None:
    if as_json:
        print(json_for_terminal(case.to_dict()))
        return
    score = "not computed" if case.score is None else f"{case.score:.6g}"
    lines = [
        f"case      {shown(case.id)}",
        f"status    {case.status}",
        f"chain     {shown(case.chain)}" + (f"   rule {shown(case.rule)}" if case.rule else ""),
        f"escalated {case.created_at:%Y-%m-%d %H:%M:%S} UTC",
        f"score     {score}  (higher = more uncertain)",
    ]
    lines += [f"  {shown(name):14}{value:.6g}" for name, value in sorted(case.components.items())]
    lines += ["", "question:", _indent(case.question)]
    for number, doc in enumerate(case.context, 1):
        lines += [f"context [{number}]:", _indent(doc)]
    lines += ["answer:", _indent(case.answer)]
    if case.metadata:
        lines += ["metadata:", _indent(json_for_terminal(case.metadata))]
    if case.is_decided:
        lines += ["", f"{case.status} by {shown(case.reviewer or '')} at "
                      f"{case.decided_at:%Y-%m-%d %H:%M:%S} UTC"]
        if case.final_answer is not None:
            lines += ["final answer:", _indent(case.final_answer)]
        if case.reason:
            lines += [f"reason: {shown(case.reason)}"]
    print("\n".join(lines))


def _indent(text: str) -> str:
    return "\n".join("    " + shown(line, lines=True) for line in (text.splitlines() or [""]))
