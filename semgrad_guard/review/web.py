"""The review page: a Starlette app over a ``ReviewQueue``, behind a token.

Routes (all but ``/login`` and ``/healthz`` need the token):

- ``GET /`` pending cases (``?status=approved|edited|rejected|all``, ``&chain=``);
- ``GET /cases/{id}`` one case (a unique id prefix redirects to it; one several cases
  share lists them); ``POST /cases/{id}/approve|edit|reject`` its forms;
- ``POST /login`` (token and reviewer name, sets a session cookie), ``POST /logout``;
- ``GET /api/cases``, ``GET /api/cases/{id}``, ``POST /api/cases/{id}/approve|edit|reject``
  for scripts, with ``Authorization: Bearer <token>`` only (JSON in and out).

Without valid credentials pages answer 401 (with the login form), a form posted
without its CSRF value answers 403, too many failed logins answer 429, and a queue
that cannot be reached (a locked or damaged file, a database that is down) answers
503 with what went wrong.

With a ``public_host``, pages are served under that host name only (other names of the
server are redirected to it, unknown ones refused), so the host-only session cookie
is never sent to other servers on the same machine: a browser sends a cookie set by
``127.0.0.1`` to every port of ``127.0.0.1``, but one set by ``review-8765.localhost``
only there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import (
    AmbiguousCaseIdError,
    CaseAlreadyDecidedError,
    CaseNotFoundError,
    ConfigError,
    InvalidCaseError,
    ReviewStoreError,
)
from .auth import SESSION_COOKIE, LoginThrottle, ReviewerAuth, clean_reviewer_name
from .case import CASE_STATUSES, EscalatedCase
from .pages import page_templates, stylesheet
from .queue import MAX_LIST, ReviewQueue

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

#: Sent with every response: no scripts, no framing, no caching of case data.
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'none'; style-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

_ACTIONS = ("approve", "edit", "reject")


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class _CanonicalHost:
    """Pages only under the public host name; the API and health check under any of the
    server's loopback names too; every other Host (DNS rebinding) refused."""

    def __init__(self, app: ASGIApp, public_host: str) -> None:
        self.app = app
        self.public_host = public_host

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        port = (scope.get("server") or ("", 0))[1]
        public = self.public_host.format(port=port).lower()
        host = (request.url.hostname or "").lower()
        path = scope.get("path", "")
        if host == public or (host in _LOOPBACK_NAMES and (
                path.startswith("/api/") or path == "/healthz")):
            await self.app(scope, receive, send)
            return
        if host in _LOOPBACK_NAMES and request.method in ("GET", "HEAD"):
            target = request.url.replace(hostname=public, port=port or None)
            response: Response = RedirectResponse(str(target), status_code=307)
        else:
            response = JSONResponse({"error": f"this server answers as {public}:{port}"},
                                    status_code=421)
        await response(scope, receive, send)


class _ReviewPage:
    def __init__(self, queue: ReviewQueue, auth: ReviewerAuth, secure_cookie: bool,
                 throttle: LoginThrottle) -> None:
        self.queue = queue
        self.auth = auth
        self.secure_cookie = secure_cookie
        # A Secure cookie gets the __Host- prefix: the browser then refuses it unless it
        # came over HTTPS, for this host only, with Path=/.
        self.cookie_name = f"__Host-{SESSION_COOKIE}" if secure_cookie else SESSION_COOKIE
        self.throttle = throttle
        self.templates = page_templates()

    # -- rendering -------------------------------------------------------------------

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("reviewer", None)
        context.setdefault("csrf", "")
        context.setdefault("counts", {})
        context.setdefault("current_status", "")
        context.setdefault("error", None)
        context.setdefault("cases", [])
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status_code)

    def login_page(self, request: Request, status_code: int = 401,
                   error: str | None = None) -> HTMLResponse:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return self.render("login.html", status_code, next=target, error=error)

    def message(self, request: Request, status_code: int, heading: str, message: str,
                session: tuple[str, str] | None, cases: list[str] | None = None
                ) -> HTMLResponse:
        reviewer, cookie = session or (None, "")
        return self.render("message.html", status_code, heading=heading, message=message,
                           link="/", link_text="Back to the queue", reviewer=reviewer,
                           csrf=self.auth.csrf_value(cookie) if cookie else "",
                           cases=cases or [])

    # -- who is asking ---------------------------------------------------------------

    async def session(self, request: Request) -> tuple[str, str] | None:
        cookie = request.cookies.get(self.cookie_name)
        if not cookie:
            return None
        reviewer = await run_in_threadpool(self.auth.reviewer_from_cookie, cookie)
        return (reviewer, cookie) if reviewer else None

    def api_reviewer(self, request: Request) -> str | None:
        authorization = request.headers.get("authorization")
        if not self.auth.bearer_matches(authorization):
            if authorization:
                self.throttle.failed(_client(request))
            return None
        return clean_reviewer_name(request.headers.get("x-reviewer", "")) or "api"

    def unavailable(self, request: Request, exc: ReviewStoreError) -> Response:
        logger.error("review page: the queue is unavailable: %s", exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=503,
                                headers={"retry-after": "5"})
        response = self.render("message.html", 503, heading="The review queue is unavailable",
                               message=f"{exc}. Nothing was changed; try again shortly.",
                               link="/", link_text="Try again")
        response.headers["retry-after"] = "5"
        return response

    def throttled(self, request: Request) -> Response | None:
        wait = self.throttle.retry_after(_client(request))
        if not wait:
            return None
        message = f"Too many failed attempts; try again in {wait} s."
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=429,
                                headers={"retry-after": str(wait)})
        response = self.render("login.html", 429, next="/", error=message)
        response.headers["retry-after"] = str(wait)
        return response

    # -- pages -----------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if await self.session(request):
            return RedirectResponse("/", status_code=303)
        return self.login_page(request, status_code=200)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        target = _local_path(str(form.get("next") or "/"))
        if target == "/login":
            target = "/"
        name = clean_reviewer_name(str(form.get("name") or ""))
        refused = self.throttled(request)
        if refused is not None:
            return refused
        if not self.auth.token_matches(str(form.get("token") or "")):
            self.throttle.failed(_client(request))
            logger.warning("review page: failed login from %s", _client(request))
            return self.render("login.html", 401, next=target, error="Wrong token.")
        if name is None:
            return self.render("login.html", 400, next=target,
                               error="Enter your name (up to 64 printable characters).")
        cookie = await run_in_threadpool(self.auth.start_session, name)
        redirect = RedirectResponse(target, status_code=303)
        redirect.set_cookie(self.cookie_name, cookie, max_age=int(self.auth.max_age),
                            httponly=True, samesite="strict", secure=self.secure_cookie,
                            path="/")
        return redirect

    async def logout(self, request: Request) -> Response:
        session = await self.session(request)
        form = await request.form()
        if session and not self.auth.csrf_matches(session[1], _field(form, "csrf")):
            return self.message(request, 403, "Forbidden", "The form was not sent by this "
                                "page (missing or wrong CSRF value).", session)
        if session:
            await run_in_threadpool(self.auth.end_session, session[1])
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(self.cookie_name, path="/", secure=self.secure_cookie,
                               httponly=True, samesite="strict")
        return response

    async def static(self, request: Request) -> Response:
        return Response(stylesheet(), media_type="text/css",
                        headers={"cache-control": "no-cache"})

    async def case_list(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.login_page(request)
        status = request.query_params.get("status", "pending")
        chain = request.query_params.get("chain") or None
        if status != "all" and status not in CASE_STATUSES:
            return self.message(request, 400, "Unknown status",
                                f"Status {status!r} is not one of {', '.join(CASE_STATUSES)}.",
                                session)
        cases = await run_in_threadpool(
            self.queue.list, None if status == "all" else status, chain, 200)  # type: ignore[arg-type]
        counts = await run_in_threadpool(self.queue.counts)
        counts["all"] = sum(counts.values())
        return self.render("list.html", cases=cases, chain=chain, current_status=status,
                           counts=counts, reviewer=session[0],
                           csrf=self.auth.csrf_value(session[1]))

    async def case_page(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.login_page(request)
        case_id = request.path_params["case_id"]
        try:
            case = await run_in_threadpool(self.queue.get, case_id)
        except CaseNotFoundError as exc:
            return self.message(request, 404, "No such case", f"{exc}.", session)
        except AmbiguousCaseIdError as exc:
            return self.message(request, 409, "Several cases fit", f"{exc}.", session,
                                cases=exc.matches)
        if case.id != case_id:  # a unique prefix: the page lives at the full id
            return RedirectResponse(f"/cases/{quote(case.id, safe='')}", status_code=303)
        next_case = None
        if request.query_params.get("done"):
            pending = await run_in_threadpool(self.queue.list, "pending", None, 1)
            next_case = pending[0] if pending else None
        counts = await run_in_threadpool(self.queue.counts)
        counts["all"] = sum(counts.values())
        return self.render("case.html", case=case, reviewer=session[0], counts=counts,
                           csrf=self.auth.csrf_value(session[1]), current_status="",
                           done=bool(request.query_params.get("done")), next_case=next_case)

    async def decide_form(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.login_page(request)
        form = await request.form()
        if not self.auth.csrf_matches(session[1], _field(form, "csrf")):
            return self.message(request, 403, "Forbidden", "The form was not sent by this "
                                "page (missing or wrong CSRF value).", session)
        case_id = request.path_params["case_id"]
        action = request.path_params["action"]
        try:
            await self.apply(case_id, action, session[0], _field(form, "answer"),
                             _field(form, "reason"))
        except CaseNotFoundError:
            return self.message(request, 404, "No such case",
                                f"There is no case with id {case_id}.", session)
        except AmbiguousCaseIdError as exc:
            return self.message(request, 409, "Several cases fit", f"{exc}.", session,
                                cases=exc.matches)
        except CaseAlreadyDecidedError as exc:
            return self.message(request, 409, "Already decided", str(exc), session)
        except (InvalidCaseError, ConfigError) as exc:
            return self.message(request, 400, "Cannot record that decision", str(exc), session)
        return RedirectResponse(f"/cases/{quote(case_id, safe='')}?done=1", status_code=303)

    async def apply(self, case_id: str, action: str, reviewer: str, answer: str | None,
                    reason: str | None) -> EscalatedCase:
        if action == "approve":
            return await run_in_threadpool(self.queue.approve, case_id, reviewer)
        if action == "edit":
            if not answer or not answer.strip():
                raise InvalidCaseError("an edited answer must not be empty")
            return await run_in_threadpool(self.queue.edit, case_id, answer, reviewer,
                                           reason or None)
        if action == "reject":
            return await run_in_threadpool(self.queue.reject, case_id, reviewer, reason or None)
        raise ConfigError(f"action {action!r}: expected one of {', '.join(_ACTIONS)}")

    # -- JSON API ----------------------------------------------------------------------

    async def api_list(self, request: Request) -> Response:
        if (refused := self.throttled(request)) is not None:
            return refused
        if self.api_reviewer(request) is None:
            return _unauthorized()
        status = request.query_params.get("status") or None
        chain = request.query_params.get("chain") or None
        given = request.query_params.get("limit", "100")
        if not given.isdigit() or len(given) > 9:
            return JSONResponse({"error": f"limit {given!r}: expected an integer from 1 to "
                                          f"{MAX_LIST}"}, status_code=400)
        try:
            cases = await run_in_threadpool(self.queue.list, status, chain, int(given))  # type: ignore[arg-type]
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"cases": [case.to_dict() for case in cases]})

    async def api_case(self, request: Request) -> Response:
        if (refused := self.throttled(request)) is not None:
            return refused
        if self.api_reviewer(request) is None:
            return _unauthorized()
        try:
            case = await run_in_threadpool(self.queue.get, request.path_params["case_id"])
        except CaseNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except AmbiguousCaseIdError as exc:
            return JSONResponse({"error": str(exc), "matches": exc.matches}, status_code=409)
        return JSONResponse(case.to_dict())

    async def api_decide(self, request: Request) -> Response:
        if (refused := self.throttled(request)) is not None:
            return refused
        reviewer = self.api_reviewer(request)
        if reviewer is None:
            return _unauthorized()
        try:
            body = await request.json() if await request.body() else {}
        except json.JSONDecodeError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            case = await self.apply(request.path_params["case_id"],
                                    request.path_params["action"], reviewer,
                                    body.get("answer"), body.get("reason"))
        except CaseNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except AmbiguousCaseIdError as exc:
            return JSONResponse({"error": str(exc), "matches": exc.matches}, status_code=409)
        except CaseAlreadyDecidedError as exc:
            return JSONResponse({"error": str(exc), "case": exc.case.to_dict()}, status_code=409)
        except (InvalidCaseError, ConfigError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(case.to_dict())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _local_path(target: str) -> str:
    # Only same-site paths: "//evil.example" or "https://..." would be an open redirect.
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _unauthorized() -> JSONResponse:
    return JSONResponse({"error": "send Authorization: Bearer <review token>"},
                        status_code=401, headers={"www-authenticate": "Bearer"})


def create_review_app(queue: ReviewQueue, token: str, *, session_max_age: float = 12 * 3600,
                      secure_cookie: bool = False, public_host: str | None = None,
                      login_attempts: int = 5, login_window: float = 60.0) -> Starlette:
    """The review page as an ASGI app, to serve with uvicorn or mount in another app.

    ``token`` must be at least 16 characters (8 of them different). ``secure_cookie=True``
    marks the session cookie HTTPS-only (set it behind TLS). ``public_host`` (which may
    contain ``{port}``) is the one host name pages answer to; ``None`` leaves host
    checks to the application the page is mounted in. At most ``login_attempts``
    failed logins per client per ``login_window`` seconds.

    >>> from semgrad_guard.review import open_review_queue
    >>> app = create_review_app(open_review_queue("sqlite:///:memory:"),
    ...                         token="a-long-random-review-token")
    >>> sorted(route.path for route in app.routes)[:3]
    ['/', '/api/cases', '/api/cases/{case_id}']
    """
    auth = ReviewerAuth(token, queue.store, max_age=session_max_age)
    page = _ReviewPage(queue, auth, secure_cookie, LoginThrottle(login_attempts, login_window))
    routes = [
        Route("/", page.case_list, methods=["GET"]),
        Route("/login", page.login_form, methods=["GET"]),
        Route("/login", page.login, methods=["POST"]),
        Route("/logout", page.logout, methods=["POST"]),
        Route("/cases/{case_id}", page.case_page, methods=["GET"]),
        Route("/cases/{case_id}/{action:str}", page.decide_form, methods=["POST"]),
        Route("/api/cases", page.api_list, methods=["GET"]),
        Route("/api/cases/{case_id}", page.api_case, methods=["GET"]),
        Route("/api/cases/{case_id}/{action:str}", page.api_decide, methods=["POST"]),
        Route("/healthz", page.healthz, methods=["GET"]),
        Route("/static/review.css", page.static, methods=["GET"]),
    ]

    async def unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ReviewStoreError)
        return page.unavailable(request, exc)

    app = Starlette(routes=routes, exception_handlers={ReviewStoreError: unavailable})
    if public_host is not None:
        app.add_middleware(_CanonicalHost, public_host=public_host)  # type: ignore[arg-type]
    app.add_middleware(_SecurityHeaders)  # type: ignore[arg-type]
    return app
