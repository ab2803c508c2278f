"""Bad input is refused alike by both backends, with a typed error naming the problem."""

from __future__ import annotations

import httpx
import pytest

from semgrad_guard.cli import main
from semgrad_guard.errors import ConfigError
from semgrad_guard.review import InvalidCaseError, ReviewQueue, open_review_queue
from semgrad_guard.review.server import ReviewServer

from .conftest import REVIEW_TOKEN

LONE = "\ud800"


@pytest.mark.parametrize("fields", [
    {"metadata": {"user": "a\x00b"}},
    {"metadata": {"nested": [{"deep": "\x00"}]}},
    {"metadata": {"key\x00": 1}},
    {"components": {"sem\x00grad": 0.1}},
    {"question": "q" + LONE},
    {"answer": LONE},
    {"context": ["ok", "bad " + LONE]},
    {"metadata": {"user": LONE}},
    {"metadata": {LONE: 1}},
    {"chain": "rag" + LONE},
])
def test_text_postgresql_cannot_hold_is_refused_by_every_backend(
        queue: ReviewQueue, fields: dict[str, object]) -> None:
    submitted: dict[str, object] = {"chain": "c", "question": "q", "answer": "a", **fields}
    with pytest.raises(InvalidCaseError) as caught:
        queue.submit(**submitted)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "NUL" in message or "surrogate" in message
    assert queue.counts()["pending"] == 0


def test_decisions_and_filters_with_bad_text_are_typed(queue: ReviewQueue) -> None:
    case = queue.submit(chain="c", question="q", answer="a")
    with pytest.raises(InvalidCaseError, match="surrogate"):
        queue.edit(case.id, answer="x" + LONE)
    with pytest.raises(InvalidCaseError, match="surrogate"):
        queue.reject(case.id, reviewer="bob", reason=LONE)
    with pytest.raises(ConfigError, match="surrogate"):
        queue.list(chain=LONE)
    with pytest.raises(ConfigError, match="limit"):
        queue.list(limit=10**20)
    assert queue.get(case.id).status == "pending"


def test_cli_filters_and_webhook_urls_are_typed_errors(sqlite_url: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # An undecodable byte in argv arrives as a lone surrogate (surrogateescape).
    assert main(["review", "list", "--queue", sqlite_url, "--create", "--chain", "x\udcff"]) == 2
    assert "surrogate" in capsys.readouterr().err
    for url in ("ftp://example.org/hook", "not a url", "http://"):
        assert main(["review", "list", "--queue", sqlite_url, "--webhook-url", url]) == 2
        err = capsys.readouterr().err
        assert "webhook" in err and "Traceback" not in err and "pydantic" not in err


def test_api_limit_overflow_is_a_400(review_server: ReviewServer) -> None:
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    for limit in ("99999999999999999999", "-1", "0", "abc"):
        response = httpx.get(review_server.url + f"api/cases?limit={limit}", headers=headers)
        assert response.status_code == 400, limit
        assert "limit" in response.json()["error"]
    with open_review_queue(review_server.queue.location) as other:
        assert other.counts()["pending"] == 0
