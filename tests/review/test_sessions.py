"""Review-page sessions: revocation, throttling, token strength, binding, cookie scope."""

from __future__ import annotations

import multiprocessing
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from semgrad_guard.cli import main
from semgrad_guard.errors import ConfigError
from semgrad_guard.review import SQLiteReviewStore, create_review_app, open_review_queue
from semgrad_guard.review.auth import SESSION_COOKIE
from semgrad_guard.review.queue import ReviewQueue
from semgrad_guard.review.server import ReviewServer, ReviewServerConfig
from tests.sqlite_locks import hold_write_lock

from .conftest import REVIEW_TOKEN

FORK = multiprocessing.get_context("fork")


def log_in(client: httpx.Client, name: str = "alice") -> str:
    response = client.post("/login", data={"token": REVIEW_TOKEN, "name": name, "next": "/"})
    assert response.status_code == 303
    return str(client.cookies[SESSION_COOKIE])


def test_logout_revokes_the_session_on_the_server(review_server: ReviewServer) -> None:
    with httpx.Client(base_url=review_server.url) as client:
        cookie = log_in(client)
        page = client.get("/")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    # A copy of the cookie, kept by anyone, no longer opens the page.
    with httpx.Client(base_url=review_server.url, cookies={SESSION_COOKIE: cookie}) as copy:
        assert copy.get("/").status_code == 401
    # Other sessions are untouched.
    with httpx.Client(base_url=review_server.url) as other:
        log_in(other, "bob")
        assert other.get("/").status_code == 200


def test_failed_logins_are_throttled(review_server: ReviewServer) -> None:
    with httpx.Client(base_url=review_server.url) as client:
        for _ in range(5):
            wrong = client.post("/login", data={"token": "wrong-token-1234567", "name": "m"})
            assert wrong.status_code == 401
        blocked = client.post("/login", data={"token": REVIEW_TOKEN, "name": "m"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert SESSION_COOKIE not in blocked.cookies
        api = client.get("/api/cases", headers={"Authorization": f"Bearer {REVIEW_TOKEN}"})
        assert api.status_code == 429


def test_bearer_guesses_count_as_failed_logins(sqlite_url: str) -> None:
    with open_review_queue(sqlite_url) as queue:
        config = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), port=0,
                                    public_host="127.0.0.1", login_attempts=3)
        with ReviewServer(queue, config) as server, httpx.Client(base_url=server.url) as client:
            codes = [client.get("/api/cases", headers={"Authorization": f"Bearer guess-{n}"}
                                ).status_code for n in range(4)]
            assert codes == [401, 401, 401, 429]


@pytest.mark.parametrize("token", ["x", "short-token", "a" * 40, "abababababababababab"])
def test_weak_tokens_are_refused_everywhere(token: str) -> None:
    with open_review_queue("sqlite:///:memory:") as queue:
        with pytest.raises(ConfigError, match="16 characters with at least 8"):
            create_review_app(queue, token)
    with pytest.raises(ValidationError, match="16 characters"):
        ReviewServerConfig(token=SecretStr(token))


def test_a_non_loopback_bind_needs_tls_or_an_explicit_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="not loopback"):
        ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), host="0.0.0.0")
    with pytest.raises(ValidationError, match="both"):
        ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), host="0.0.0.0", ssl_certfile="c.pem")
    tls = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), host="0.0.0.0",
                             ssl_certfile="c.pem", ssl_keyfile="k.pem")
    assert tls.cookie_secure
    proxied = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), host="10.1.2.3",
                                 allow_plain_http=True, secure_cookie=True)
    assert proxied.cookie_secure
    monkeypatch.setenv("SEMGRAD_GUARD_REVIEW_TOKEN", REVIEW_TOKEN)
    url = f"sqlite:///{tmp_path / 'review.db'}"
    assert main(["review", "serve", "--queue", url, "--host", "0.0.0.0"]) == 2
    assert "--allow-plain-http" in capsys.readouterr().err


def test_the_secure_cookie_option(sqlite_url: str) -> None:
    with open_review_queue(sqlite_url) as queue:
        config = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), port=0,
                                    public_host="127.0.0.1", secure_cookie=True)
        with ReviewServer(queue, config) as server:
            response = httpx.post(server.url + "login",
                                  data={"token": REVIEW_TOKEN, "name": "alice"})
    set_cookie = response.headers["set-cookie"].lower()
    assert set_cookie.startswith(f"__host-{SESSION_COOKIE}=")
    assert "secure" in set_cookie and "httponly" in set_cookie and "domain" not in set_cookie


def test_pages_answer_only_to_their_host_name(browser_review_server: ReviewServer) -> None:
    server = browser_review_server
    port = server.port
    assert server.url == f"http://review-{port}.localhost:{port}/"
    loopback = f"http://127.0.0.1:{port}"
    moved = httpx.get(f"{loopback}/cases/x?done=1")
    assert moved.status_code == 307
    assert moved.headers["location"] == f"http://review-{port}.localhost:{port}/cases/x?done=1"
    # DNS rebinding: a foreign name pointed at 127.0.0.1 gets nothing.
    assert httpx.get(f"{loopback}/", headers={"Host": f"evil.example:{port}"}
                     ).status_code == 421
    assert httpx.post(f"{loopback}/login", data={"token": REVIEW_TOKEN, "name": "a"}
                      ).status_code == 421
    # Scripts use the bound address with the bearer token.
    api = httpx.get(f"{loopback}/api/cases", headers={"Authorization": f"Bearer {REVIEW_TOKEN}"})
    assert api.status_code == 200


class CookieCatcher:
    """Another local web server, on another port, that records the cookies it is sent."""

    def __init__(self) -> None:
        self.cookies: list[str] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                catcher.cookies.append(self.headers.get("Cookie") or "")
                body = b"<p>another local server</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("public_host", [None, "127.0.0.1"])
def test_the_session_cookie_does_not_reach_other_local_servers(
        browser: Any, sqlite_url: str, public_host: str | None) -> None:
    """By default it does not; answering as 127.0.0.1 (the opt-out) shows why it would."""
    other = CookieCatcher()
    queue = open_review_queue(sqlite_url)
    config = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), port=0, public_host=public_host)
    try:
        server = ReviewServer(queue, config).start()
        page = browser.new_page()
        # The reviewer types the loopback address; the page moves to its own name.
        page.goto(f"http://127.0.0.1:{server.port}/")
        assert page.url.startswith(server.url)
        page.fill("#name", "alice")
        page.fill("#token", REVIEW_TOKEN)
        page.click("button[type=submit]")
        assert "Signed in as alice" in (page.text_content("header") or "")
        assert any(c["name"] == SESSION_COOKIE for c in page.context.cookies())
        for host in ("127.0.0.1", "localhost"):
            page.goto(f"http://{host}:{other.port}/")
            assert "another local server" in page.content()
        assert len(other.cookies) >= 2  # the pages (and the browser's favicon requests)
        leaked = [cookie for cookie in other.cookies if SESSION_COOKIE in cookie]
        assert bool(leaked) == (public_host == "127.0.0.1"), other.cookies
        server.stop()
    finally:
        other.close()
        queue.close()


def test_a_locked_queue_file_gives_a_clear_error_page(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    queue = ReviewQueue(SQLiteReviewStore(path, busy_timeout=0.5))
    case = queue.submit(chain="c", question="q", answer="a")
    config = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), port=0, public_host="127.0.0.1")
    holding, release = FORK.Event(), FORK.Event()
    with ReviewServer(queue, config) as server, httpx.Client(base_url=server.url) as client:
        log_in(client)
        page = client.get(f"/cases/{case.id}").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        locker = FORK.Process(target=hold_write_lock, args=(str(path), holding, release))
        locker.start()
        try:
            assert holding.wait(30)
            response = client.post(f"/cases/{case.id}/approve", data={"csrf": csrf},
                                   timeout=30)
            api = client.post(f"/api/cases/{case.id}/approve", timeout=30,
                              headers={"Authorization": f"Bearer {REVIEW_TOKEN}"})
        finally:
            release.set()
            locker.join(30)
        assert response.status_code == 503 and "retry-after" in response.headers
        assert "The review queue is unavailable" in response.text
        assert "locked" in response.text
        assert api.status_code == 503 and "locked" in api.json()["error"]
        # Once the lock is gone, the same form works.
        assert client.post(f"/cases/{case.id}/approve", data={"csrf": csrf}
                           ).status_code == 303
    queue.close()
