"""Fixtures of the review tests: a real PostgreSQL server, queues on both backends."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from semgrad_guard.review import ReviewQueue, open_review_queue
from semgrad_guard.review.server import ReviewServer, ReviewServerConfig

REVIEW_TOKEN = "test-review-token-5f0c2a9e7b"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(f"{folder}/initdb") and os.path.exists(f"{folder}/pg_ctl"):
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free localhost port; yields its admin URL."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # postgres refuses to run as root: run it as the postgres system user.
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Under /tmp directly: pytest's own tmp folders are private to root.
    root = Path(tempfile.mkdtemp(prefix="semgrad-review-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, capture_output=True)
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
                   "-c max_connections=60 -c shared_buffers=32MB")
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l",
                        str(root / "server.log"), "-o", options, "-w", "-t", "60", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr!r} {log}") from exc
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The server's URL with a fresh, empty schema first on the search path."""
    import psycopg

    schema = f"review_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_server}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'review.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty queue, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def queue(queue_url: str) -> Iterator[ReviewQueue]:
    with open_review_queue(queue_url) as opened:
        yield opened


@pytest.fixture
def review_server(sqlite_url: str) -> Iterator[ReviewServer]:
    """The review page served by uvicorn on a free 127.0.0.1 port, over a SQLite queue,
    answering as 127.0.0.1 (HTTP clients cannot resolve review-<port>.localhost)."""
    with open_review_queue(sqlite_url) as opened:
        config = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), port=0,
                                    public_host="127.0.0.1")
        with ReviewServer(opened, config) as server:
            yield server


@pytest.fixture
def browser_review_server(sqlite_url: str) -> Iterator[ReviewServer]:
    """The review page as `semgrad-guard review serve` runs it: answering as
    review-<port>.localhost, which browsers resolve to 127.0.0.1 themselves."""
    with open_review_queue(sqlite_url) as opened:
        config = ReviewServerConfig(token=SecretStr(REVIEW_TOKEN), port=0)
        with ReviewServer(opened, config) as server:
            yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    """A real headless Chromium, driven by Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
