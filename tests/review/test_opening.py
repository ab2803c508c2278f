"""Where ``open_review_queue`` puts the cases, by URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from semgrad_guard.errors import ConfigError
from semgrad_guard.review import (
    ReviewStoreError,
    SQLiteReviewStore,
    open_review_queue,
)


def test_none_means_review_db_in_the_cache(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(tmp_path / "cache"))
    with open_review_queue() as queue:
        queue.submit(chain="c", question="q", answer="a")
        assert isinstance(queue.store, SQLiteReviewStore)
    assert (tmp_path / "cache" / "review.db").exists()


def test_sqlite_urls_and_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relative").mkdir()
    with open_review_queue("sqlite:///relative/review.db") as queue:
        case = queue.submit(chain="c", question="q", answer="a")
    with open_review_queue(f"sqlite:///{tmp_path}/relative/review.db") as queue:
        assert queue.get(case.id).id == case.id  # sqlite:////abs is the same file
    with open_review_queue(tmp_path / "relative" / "review.db") as queue:
        assert queue.get(case.id).id == case.id
    with open_review_queue("sqlite:///:memory:") as queue:
        assert queue.list() == []


def test_the_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = SQLiteReviewStore(tmp_path / "review.db")
    try:
        assert store._run("PRAGMA journal_mode")[0][0] == "wal"
        assert store._run("PRAGMA synchronous")[0][0] == 2  # FULL
    finally:
        store.close()


def test_bad_urls_and_files_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        open_review_queue("mysql://db/review")
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_review_queue("sqlite://")
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("this is not a database " * 100)
    with pytest.raises(ReviewStoreError, match="notes.db"):
        open_review_queue(not_a_db)
    queue = open_review_queue(tmp_path / "ok.db")
    queue.close()
    with pytest.raises(ReviewStoreError, match="closed"):
        queue.list()


def test_postgresql_by_url(postgres_url: str) -> None:
    with open_review_queue(postgres_url) as queue:
        assert type(queue.store).__name__ == "PostgresReviewStore"
        case = queue.submit(chain="c", question="q", answer="a")
    with open_review_queue(postgres_url.replace("postgresql://", "postgresql+psycopg://")) as q:
        assert q.get(case.id).status == "pending"


def test_unreachable_postgresql_is_a_typed_error() -> None:
    from .conftest import free_port

    with pytest.raises(ReviewStoreError, match="127.0.0.1"):
        open_review_queue(f"postgresql://nobody:secret-pw@127.0.0.1:{free_port()}/db")


def test_password_is_not_shown_in_the_location(postgres_server: str) -> None:
    from semgrad_guard.review import PostgresReviewStore

    url = postgres_server.replace("postgres@", "postgres:hunter2-secret@")
    store = PostgresReviewStore(url)  # trust auth: the password is not checked
    try:
        assert "hunter2" not in store.location and "***" in store.location
    finally:
        store.close()


def test_a_missing_folder_is_an_error_naming_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no-such-folder/review.db"
    with pytest.raises(ConfigError, match="no-such-folder.*does not exist") as caught:
        open_review_queue(url)
    assert url in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        open_review_queue(tmp_path / "typo" / "review.db")
    assert not (tmp_path / "no-such-folder").exists() and not (tmp_path / "typo").exists()


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "mysql://db/review",
                                 "https://example.org/queue"])
def test_unknown_schemes_are_refused_before_anything_is_opened(url: str) -> None:
    with pytest.raises(ConfigError, match="not supported") as caught:
        open_review_queue(url)
    assert url in str(caught.value)


def test_create_false_refuses_a_queue_file_that_does_not_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/review.db"
    with pytest.raises(ConfigError, match="there is no queue file"):
        open_review_queue(url, create=False)
    assert not (tmp_path / "review.db").exists()
    open_review_queue(url).close()  # created
    open_review_queue(url, create=False).close()  # now it exists
    monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="no review queue at .*the default queue"):
        open_review_queue(create=False)
    assert not (tmp_path / "cache").exists()
