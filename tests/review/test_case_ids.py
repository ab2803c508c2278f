"""Case ids given as a unique prefix: the queue, the command line, the page and its API."""

from __future__ import annotations

import httpx
import pytest

from semgrad_guard.cli import main
from semgrad_guard.errors import AmbiguousCaseIdError, CaseNotFoundError
from semgrad_guard.review import EscalatedCase, ReviewQueue, open_review_queue
from semgrad_guard.review.server import ReviewServer

from .conftest import REVIEW_TOKEN


def _with_ids(queue: ReviewQueue, *ids: str) -> list[EscalatedCase]:
    # Cases with chosen ids, to make prefixes collide on purpose.
    cases = []
    for number, case_id in enumerate(ids):
        case = EscalatedCase(id=case_id, chain="c", question=f"q{number}", answer=f"a{number}")
        queue.store.add(case)
        cases.append(case)
    return cases


def test_a_unique_prefix_finds_the_case_on_both_backends(queue: ReviewQueue) -> None:
    first, second, _ = _with_ids(queue, "3f2a0001aaaa", "3f2a0002bbbb", "9c1d0003cccc")
    assert queue.get("3f2a0001").id == first.id
    assert queue.resolve("9c1d") == "9c1d0003cccc"
    assert queue.approve("3f2a0002", reviewer="ann").id == second.id
    assert queue.edit("9c1d00", answer="fixed", reviewer="ann").final_answer == "fixed"
    assert queue.get(second.id).status == "approved"  # the full id still works


def test_an_ambiguous_prefix_is_a_typed_error_listing_the_matches(queue: ReviewQueue) -> None:
    _with_ids(queue, "3f2a0001aaaa", "3f2a0002bbbb", "9c1d0003cccc")
    with pytest.raises(AmbiguousCaseIdError) as caught:
        queue.reject("3f2a", reviewer="ann")
    assert caught.value.matches == ["3f2a0001aaaa", "3f2a0002bbbb"]
    assert "3f2a0001aaaa, 3f2a0002bbbb" in str(caught.value)
    assert "give more characters" in str(caught.value)
    assert queue.counts()["pending"] == 3  # nothing was decided
    with pytest.raises(CaseNotFoundError, match="at least 4 characters"):
        queue.get("3f2")
    with pytest.raises(CaseNotFoundError, match="nor an id starting with it"):
        queue.get("ffff")


def test_many_matches_are_listed_up_to_ten(queue: ReviewQueue) -> None:
    _with_ids(queue, *(f"abcd{n:04d}" for n in range(12)))
    with pytest.raises(AmbiguousCaseIdError, match="fits more than 10 cases") as caught:
        queue.get("abcd")
    assert len(caught.value.matches) == 10


def test_the_command_line_takes_a_prefix(sqlite_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with open_review_queue(sqlite_url) as queue:
        _with_ids(queue, "3f2a0001aaaa", "3f2a0002bbbb")
    assert main(["review", "show", "3f2a0001", "--queue", sqlite_url]) == 0
    assert "3f2a0001aaaa" in capsys.readouterr().out
    assert main(["review", "approve", "3f2a", "--queue", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert "fits 2 cases" in err and "3f2a0001aaaa, 3f2a0002bbbb" in err
    assert main(["review", "approve", "3f2a0002", "--queue", sqlite_url,
                 "--reviewer", "ann"]) == 0
    assert "approved by ann" in capsys.readouterr().out


def test_the_page_and_api_take_a_prefix(review_server: ReviewServer) -> None:
    queue = review_server.queue
    _with_ids(queue, "3f2a0001aaaa", "3f2a0002bbbb")
    with httpx.Client(base_url=review_server.url, follow_redirects=False) as client:
        client.post("/login", data={"token": REVIEW_TOKEN, "name": "ann", "next": "/"})
        response = client.get("/cases/3f2a0001")
        assert response.status_code == 303
        assert response.headers["location"] == "/cases/3f2a0001aaaa"
        response = client.get("/cases/3f2a")
        assert response.status_code == 409
        assert 'href="/cases/3f2a0001aaaa"' in response.text
        assert 'href="/cases/3f2a0002bbbb"' in response.text
        api = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
        assert client.get("/api/cases/3f2a0002", headers=api).json()["id"] == "3f2a0002bbbb"
        ambiguous = client.get("/api/cases/3f2a", headers=api)
        assert ambiguous.status_code == 409
        assert ambiguous.json()["matches"] == ["3f2a0001aaaa", "3f2a0002bbbb"]
        decided = client.post("/api/cases/3f2a0002/approve", headers=api)
        assert decided.json()["status"] == "approved"
