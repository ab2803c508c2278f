"""Fixtures of the review tests: queues on both backends (the PostgreSQL server comes from
the root conftest), the review page, a real Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from semgrad_guard.review import ReviewQueue, open_review_queue
from semgrad_guard.review.server import ReviewServer, ReviewServerConfig
from tests.postgres import free_port  # noqa: F401 - the review tests import it from here

REVIEW_TOKEN = "test-review-token-5f0c2a9e7b"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


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
