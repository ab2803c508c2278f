"""``semgrad-guard review ...`` through the real entry point."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from semgrad_guard.cli import main
from semgrad_guard.review import open_review_queue

from .conftest import REVIEW_TOKEN, free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["review", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_show_and_filters(queue_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_review_queue(queue_url) as queue:
        a = queue.submit(chain="support-rag", question="Refund\nwindow?", answer="90 days",
                         score=0.0012, components={"semgrad": 0.0012}, context=["doc one"])
        b = queue.submit(chain="billing", question="Refund twice?", answer="yes", score=None)
        queue.reject(b.id, reviewer="alice", reason="policy")

    code, out, _ = run(capsys, "list", "--queue", queue_url)
    assert code == 0 and a.id in out and b.id not in out and "Refund window?" in out
    code, out, _ = run(capsys, "list", "--queue", queue_url, "--status", "rejected", "--json")
    assert [case["id"] for case in json.loads(out)] == [b.id]
    code, out, _ = run(capsys, "list", "--queue", queue_url, "--status", "all",
                       "--chain", "billing")
    assert b.id in out and a.id not in out
    code, out, _ = run(capsys, "list", "--queue", queue_url, "--chain", "nobody")
    assert out.strip() == "no pending cases"

    code, out, _ = run(capsys, "show", a.id, "--queue", queue_url)
    assert code == 0
    for text in ("status    pending", "support-rag", "0.0012", "doc one", "90 days",
                 "semgrad"):
        assert text in out
    code, out, _ = run(capsys, "show", b.id, "--queue", queue_url, "--json")
    shown = json.loads(out)
    assert (shown["status"], shown["reason"], shown["score"]) == ("rejected", "policy", None)


def test_approve_edit_reject_and_typed_errors(queue_url: str,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with open_review_queue(queue_url) as queue:
        ids = [queue.submit(chain="c", question=f"q{i}", answer=f"a{i}").id for i in range(4)]

    code, out, _ = run(capsys, "approve", ids[0], "--queue", queue_url, "--reviewer", "alice")
    assert code == 0 and "approved by alice" in out
    code, out, _ = run(capsys, "edit", ids[1], "--queue", queue_url, "--answer", "fixed",
                       "--reviewer", "bob", "--json")
    assert json.loads(out)["final_answer"] == "fixed"
    monkeypatch.setattr(sys, "stdin", io.StringIO("from\nstdin\n"))
    code, out, _ = run(capsys, "edit", ids[2], "--queue", queue_url, "--answer", "-")
    assert code == 0 and "from\n    stdin" in out
    code, out, _ = run(capsys, "reject", ids[3], "--queue", queue_url, "--reason", "unsafe")
    assert code == 0 and "reason: unsafe" in out

    code, _, err = run(capsys, "approve", ids[3], "--queue", queue_url)
    assert code == 2 and "already rejected" in err
    code, _, err = run(capsys, "reject", "no-such-id", "--queue", queue_url)
    assert code == 2 and "no escalated case has id 'no-such-id'" in err
    with open_review_queue(queue_url) as queue:
        assert [c.status for c in queue.list(status=None)] == [
            "approved", "edited", "edited", "rejected"]


def test_queue_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    with open_review_queue(url) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
    monkeypatch.setenv("SEMGRAD_GUARD_REVIEW_QUEUE", url)
    code, out, _ = run(capsys, "list")
    assert code == 0 and case.id in out


def test_a_mistyped_queue_is_an_error_not_an_empty_queue(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "review.db"
    with open_review_queue(real) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
    typo = f"sqlite:///{tmp_path / 'reveiw.db'}"
    for argv in (["list"], ["show", case.id], ["approve", case.id], ["purge", "--before", "1d"]):
        code, out, err = run(capsys, *argv, "--queue", typo)
        assert code == 2 and "there is no queue file" in err and "--create" in err, argv
    assert not (tmp_path / "reveiw.db").exists()
    code, out, err = run(capsys, "list", "--queue", f"sqlite:///{tmp_path}/nowhere/review.db")
    assert code == 2 and "does not exist" in err
    code, out, _ = run(capsys, "list", "--queue", typo, "--create")
    assert code == 0 and out.strip() == "no pending cases"
    assert (tmp_path / "reveiw.db").exists()


def test_serve_needs_a_token(sqlite_url: str, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMGRAD_GUARD_REVIEW_TOKEN", raising=False)
    code, _, err = run(capsys, "serve", "--queue", sqlite_url)
    assert code == 2 and "SEMGRAD_GUARD_REVIEW_TOKEN" in err
    code, _, err = run(capsys, "serve", "--queue", sqlite_url, "--token", "short")
    assert code == 2 and "16 characters" in err


def _serve_in_child(argv: list[str], out_fd: int) -> None:
    # Runs in a forked child: the entry point as the main program, output to a pipe.
    sys.stdout = sys.stderr = open(out_fd, "w", buffering=1)
    sys.exit(main(argv))


def test_serve_runs_the_page_on_loopback(sqlite_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("SEMGRAD_GUARD_REVIEW_TOKEN", REVIEW_TOKEN)
    read_fd, write_fd = os.pipe()
    server = multiprocessing.get_context("fork").Process(
        target=_serve_in_child,
        args=(["review", "serve", "--queue", sqlite_url, "--create", "--port", str(port)],
              write_fd))
    server.start()
    os.close(write_fd)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(url)
                break
            except httpx.ConnectError:
                assert server.is_alive() and time.monotonic() < deadline
                time.sleep(0.1)
        # Pages answer under their own name (which browsers, not httpx, resolve).
        assert response.status_code == 307
        assert response.headers["location"] == f"http://review-{port}.localhost:{port}/"
        api = httpx.get(url + "api/cases", headers={"Authorization": f"Bearer {REVIEW_TOKEN}"})
        assert api.json() == {"cases": []}
    finally:
        os.kill(server.pid, signal.SIGINT)  # type: ignore[arg-type]  # Ctrl-C
        server.join(30)
    with open(read_fd) as pipe:
        output = pipe.read()
    assert server.exitcode == 0, output
    assert f"on http://review-{port}.localhost:{port}/" in output
    assert f"http://127.0.0.1:{port}/api/cases" in output
    assert REVIEW_TOKEN not in output
