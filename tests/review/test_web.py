"""The review page over HTTP: a real uvicorn server and an HTTP client."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from semgrad_guard.review import EscalatedCase, SQLiteReviewStore
from semgrad_guard.review.auth import SESSION_COOKIE, ReviewerAuth
from semgrad_guard.review.server import ReviewServer, ReviewServerConfig

from .conftest import REVIEW_TOKEN

XSS = '<script>alert("pwned")</script>'


@pytest.fixture
def client(review_server: ReviewServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=review_server.url, follow_redirects=False) as http:
        yield http


def escalate(server: ReviewServer, **overrides: object) -> EscalatedCase:
    fields: dict[str, object] = dict(chain="support-rag", question="Refund window?",
                                     answer="90 days", score=0.0012,
                                     components={"semgrad": 0.0012},
                                     context=["Refunds within 30 days."], rule="support-rag")
    fields.update(overrides)
    return server.queue.submit(**fields)  # type: ignore[arg-type]


def log_in(client: httpx.Client, name: str = "alice") -> str:
    response = client.post("/login", data={"token": REVIEW_TOKEN, "name": name, "next": "/"})
    assert response.status_code == 303
    return str(client.cookies[SESSION_COOKIE])


def csrf_of(client: httpx.Client, case: EscalatedCase) -> str:
    page = client.get(f"/cases/{case.id}").text
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def test_requests_without_the_token_are_refused(review_server: ReviewServer,
                                                client: httpx.Client) -> None:
    case = escalate(review_server)
    for path in ("/", f"/cases/{case.id}", "/?status=all"):
        response = client.get(path)
        assert response.status_code == 401
        assert 'name="token"' in response.text and "90 days" not in response.text
    assert client.post(f"/cases/{case.id}/approve", data={}).status_code == 401
    assert client.get("/api/cases").status_code == 401
    assert client.get("/api/cases", headers={"Authorization": "Bearer wrong"}).status_code == 401
    wrong = client.post("/login", data={"token": "not-the-token", "name": "mallory"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies
    forged = ReviewerAuth("another-token-of-16-chars", review_server.queue.store
                          ).start_session("mallory")
    client.cookies.set(SESSION_COOKIE, forged)
    assert client.get("/").status_code == 401
    assert review_server.queue.get(case.id).status == "pending"


def test_login_sets_a_signed_http_only_cookie_without_the_token(client: httpx.Client) -> None:
    response = client.post("/login", data={"token": REVIEW_TOKEN, "name": "alice",
                                           "next": "/?status=all"})
    assert response.status_code == 303 and response.headers["location"] == "/?status=all"
    set_cookie = response.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie
    assert REVIEW_TOKEN.lower() not in set_cookie
    page = client.get("/")
    assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
    # Only same-site redirects after login.
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post("/login", data={"token": REVIEW_TOKEN, "name": "a",
                                               "next": target})
        assert response.headers["location"] == "/"


def test_forms_need_the_session_csrf_value(review_server: ReviewServer,
                                           client: httpx.Client) -> None:
    case = escalate(review_server)
    log_in(client)
    assert client.post(f"/cases/{case.id}/approve", data={}).status_code == 403
    assert client.post(f"/cases/{case.id}/approve", data={"csrf": "0" * 64}).status_code == 403
    assert review_server.queue.get(case.id).status == "pending"
    response = client.post(f"/cases/{case.id}/approve", data={"csrf": csrf_of(client, case)})
    assert response.status_code == 303
    decided = review_server.queue.get(case.id)
    assert (decided.status, decided.reviewer, decided.final_answer) == (
        "approved", "alice", "90 days")
    page = client.get(response.headers["location"])
    assert "Decision recorded: approved" in page.text


def test_edit_reject_and_conflicts_through_the_forms(review_server: ReviewServer,
                                                     client: httpx.Client) -> None:
    a, b = escalate(review_server), escalate(review_server, chain="billing")
    log_in(client, "bob")
    csrf = csrf_of(client, a)
    empty = client.post(f"/cases/{a.id}/edit", data={"csrf": csrf, "answer": "  "})
    assert empty.status_code == 400
    edited = client.post(f"/cases/{a.id}/edit", data={"csrf": csrf, "answer": "30 days",
                                                      "reason": "policy"})
    assert edited.status_code == 303
    assert review_server.queue.get(a.id).final_answer == "30 days"
    again = client.post(f"/cases/{a.id}/reject", data={"csrf": csrf, "reason": "late"})
    assert again.status_code == 409 and "already edited by bob" in again.text
    rejected = client.post(f"/cases/{b.id}/reject", data={"csrf": csrf, "reason": "unsafe"})
    assert rejected.status_code == 303
    assert review_server.queue.get(b.id).reason == "unsafe"
    assert client.post("/cases/missing/approve", data={"csrf": csrf}).status_code == 404
    assert client.get("/cases/missing").status_code == 404
    assert client.post(f"/cases/{b.id}/delete", data={"csrf": csrf}).status_code == 400
    listing = client.get("/").text
    assert "No pending cases." in listing


def test_model_output_is_escaped_everywhere(review_server: ReviewServer,
                                            client: httpx.Client) -> None:
    case = escalate(review_server, answer=XSS, question='<img src=x onerror="alert(1)">',
                    context=[f"</pre>{XSS}"], chain='"><script>alert(2)</script>',
                    rule=XSS, metadata={"note": XSS})
    log_in(client)
    for path in ("/", f"/cases/{case.id}"):
        page = client.get(path).text
        assert "<script>" not in page and "<img" not in page
        assert "&lt;script&gt;" in page
    decided = client.post(f"/cases/{case.id}/edit",
                          data={"csrf": csrf_of(client, case), "answer": XSS, "reason": XSS})
    page = client.get(decided.headers["location"]).text
    assert "<script>" not in page and page.count("&lt;script&gt;") >= 5


def test_every_response_forbids_scripts_and_caching(review_server: ReviewServer,
                                                    client: httpx.Client) -> None:
    for response in (client.get("/"), client.get("/login"), client.get("/healthz")):
        assert "script-src" not in response.headers["content-security-policy"]
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "server" not in response.headers


def test_json_api_with_a_bearer_token(review_server: ReviewServer,
                                      client: httpx.Client) -> None:
    case = escalate(review_server)
    auth = {"Authorization": f"Bearer {REVIEW_TOKEN}", "X-Reviewer": "ci-bot"}
    listed = client.get("/api/cases?status=pending", headers=auth).json()["cases"]
    assert [c["id"] for c in listed] == [case.id]
    assert client.get(f"/api/cases/{case.id}", headers=auth).json()["answer"] == "90 days"
    decided = client.post(f"/api/cases/{case.id}/edit", headers=auth,
                          json={"answer": "30 days", "reason": "policy"})
    assert decided.status_code == 200
    assert decided.json()["status"] == "edited" and decided.json()["reviewer"] == "ci-bot"
    conflict = client.post(f"/api/cases/{case.id}/approve", headers=auth)
    assert conflict.status_code == 409 and conflict.json()["case"]["status"] == "edited"
    assert client.get("/api/cases?status=bogus", headers=auth).status_code == 400
    # The session cookie does not open the API: only the header does (no CSRF there).
    log_in(client)
    assert client.get("/api/cases").status_code == 401


def test_binds_to_loopback_by_default(review_server: ReviewServer) -> None:
    assert ReviewServerConfig(token=SecretStr(REVIEW_TOKEN)).host == "127.0.0.1"
    assert review_server.url.startswith("http://127.0.0.1:")
    sockets = review_server._uvicorn.servers[0].sockets
    assert {sock.getsockname()[0] for sock in sockets} == {"127.0.0.1"}


def test_the_token_never_reaches_logs_or_reprs(review_server: ReviewServer,
                                               client: httpx.Client,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    case = escalate(review_server)
    client.post("/login", data={"token": "wrong-token-1234567", "name": "m"})
    log_in(client)
    client.post(f"/cases/{case.id}/approve", data={"csrf": csrf_of(client, case)})
    client.get("/api/cases", headers={"Authorization": f"Bearer {REVIEW_TOKEN}"})
    messages = [record.getMessage() for record in caplog.records]
    assert any("GET /api/cases" in message for message in messages)  # access log is on
    assert any("failed login" in message for message in messages)
    assert not any(REVIEW_TOKEN in message for message in messages)
    assert REVIEW_TOKEN not in repr(review_server.config)
    assert REVIEW_TOKEN not in str(review_server.config.model_dump())


def test_weak_tokens_and_unknown_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="16 characters"):
        ReviewServerConfig(token=SecretStr("short"))
    with pytest.raises(ValidationError):
        ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), bind="0.0.0.0")  # type: ignore[call-arg]


def test_sessions_expire_and_tokens_compare_as_bytes(tmp_path: Path) -> None:
    store = SQLiteReviewStore(tmp_path / "review.db")
    auth = ReviewerAuth(REVIEW_TOKEN, store, max_age=1)
    cookie = auth.start_session("alice")
    assert auth.reviewer_from_cookie(cookie) == "alice"
    assert auth.reviewer_from_cookie(cookie[:-2] + ("A" if cookie[-2] != "A" else "B")
                                     + cookie[-1]) is None
    assert auth.reviewer_from_cookie("garbage") is None
    assert not auth.token_matches("tökén-with-non-ascii")  # no TypeError from compare_digest
    assert not auth.csrf_matches(cookie, auth.csrf_value(auth.start_session("bob")))
    time.sleep(2.1)
    assert auth.reviewer_from_cookie(cookie) is None  # expired
    store.close()
