"""Nothing lost: crashes, many writers, racing reviewers."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from semgrad_guard.review import (
    CaseAlreadyDecidedError,
    EscalatedCase,
    SQLiteReviewStore,
    open_review_queue,
)

from .writers import BIG_DOCUMENT, race_to_decide, write_cases, write_until_killed

# Fork: children start in milliseconds with the library already imported.
FORK = multiprocessing.get_context("fork")


def _drain(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def test_cases_survive_sigkill_of_the_writer_mid_write(tmp_path: Path) -> None:
    db = tmp_path / "review.db"
    url = f"sqlite:///{db}"
    reported: dict[str, int] = {}  # id -> number, for every submit that returned
    in_flight: list[int] = []  # the case each kill interrupted
    rng = random.Random(7)
    for round_ in range(5):
        read_fd, write_fd = os.pipe()
        writer = FORK.Process(target=write_until_killed, args=(url, write_fd, round_ * 10_000))
        writer.start()
        os.close(write_fd)
        seen = b""
        # After a few commits, kill as soon as the writer is inside submit().
        while seen.count(b"done") < 5 or not seen.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(
                b"start"):
            seen += os.read(read_fd, 4096)
        time.sleep(rng.uniform(0, 0.004))
        os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
        # A line cut by the kill has no newline: that case was not reported as committed.
        lines = [line.split() for line in (seen + _drain(read_fd)).split(b"\n")[:-1]]
        os.close(read_fd)
        reported.update((line[1].decode(), int(line[2])) for line in lines if line[0] == b"done")
        if lines[-1][0] == b"start":
            in_flight.append(int(lines[-1][1]))

    assert len(in_flight) >= 3  # most kills really did land inside a write

    # A plain sqlite3 connection: the file itself is intact after the kills...
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    raw.close()
    store = SQLiteReviewStore(db)
    assert store.integrity_check() == "ok"
    with open_review_queue(url) as queue:
        stored = {case.id: case for case in queue.list(status="pending", limit=10_000)}
        # ... every case the writer saw committed is there ...
        assert set(reported) <= set(stored)
        # ... and every stored case is whole: no torn or half-written rows.
        for case in stored.values():
            number = case.metadata["number"]
            assert case.question == f"question {number}"
            assert case.answer == f"answer {number} " + BIG_DOCUMENT
            assert case.context == [BIG_DOCUMENT, f"doc {number}"]
            assert case.score == float(number)
        # Besides the reported ones, only cases a kill interrupted (committed or not).
        extra = {case.metadata["number"] for case in stored.values()} - set(reported.values())
        assert extra <= set(in_flight)
        print(f"\n{len(in_flight)} of 5 kills landed inside submit(); "
              f"{len(in_flight) - len(extra)} of those cases rolled back, {len(extra)} committed")
        # The queue still works after the crashes: new cases and decisions.
        fresh = queue.submit(chain="crash", question="after", answer="a")
        assert queue.approve(fresh.id, reviewer="alice").status == "approved"
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_1000_cases_from_8_processes_and_threads_all_arrive(
        backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    writers, per_writer, threads = 8, 125, 4
    pipes = [FORK.Pipe(duplex=False) for _ in range(writers)]
    started = time.perf_counter()
    processes = [FORK.Process(target=write_cases, args=(url, w, per_writer, threads, pipes[w][1]))
                 for w in range(writers)]
    for process in processes:
        process.start()
    sent: list[str] = []
    for receiver, _ in pipes:
        sent += receiver.recv()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    elapsed = time.perf_counter() - started
    print(f"\n{backend}: {writers * per_writer} cases from {writers} processes x {threads} "
          f"threads in {elapsed:.2f} s ({writers * per_writer / elapsed:.0f} cases/s)")

    assert len(sent) == len(set(sent)) == writers * per_writer
    with open_review_queue(url) as queue:
        stored = queue.list(limit=5000)
        assert {case.id for case in stored} == set(sent)
        assert queue.counts()["pending"] == writers * per_writer
        for w in range(writers):
            mine = queue.list(chain=f"writer-{w}", limit=5000)
            assert sorted(case.metadata["n"] for case in mine) == list(range(per_writer))
            assert all(case.answer == f"w{w} a{case.metadata['n']}" for case in mine)
        if backend == "sqlite":
            assert queue.store.integrity_check() == "ok"  # type: ignore[attr-defined]


def test_racing_threads_decide_each_case_exactly_once(queue_url: str) -> None:
    with open_review_queue(queue_url) as queue:
        decided: list[EscalatedCase] = []
        queue.on_decision(decided.append)
        cases = [queue.submit(chain="race", question=f"q{i}", answer=f"a{i}") for i in range(20)]
        wins: list[tuple[str, str]] = []
        losses: list[CaseAlreadyDecidedError] = []
        lock = threading.Lock()

        def reviewer(number: int, case_id: str, barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                if number == 0:
                    result = queue.approve(case_id, reviewer="r0")
                elif number == 1:
                    result = queue.edit(case_id, answer="edited", reviewer="r1")
                else:
                    result = queue.reject(case_id, reviewer=f"r{number}", reason="race")
                with lock:
                    wins.append((case_id, result.reviewer or ""))
            except CaseAlreadyDecidedError as exc:
                with lock:
                    losses.append(exc)

        for case in cases:
            barrier = threading.Barrier(4)
            racers = [threading.Thread(target=reviewer, args=(n, case.id, barrier))
                      for n in range(4)]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join()

        assert sorted(case_id for case_id, _ in wins) == sorted(case.id for case in cases)
        assert len(losses) == 3 * len(cases)
        assert sorted(case.id for case in decided) == sorted(case.id for case in cases)
        for case_id, winner in wins:
            assert queue.get(case_id).reviewer == winner


def test_racing_processes_decide_each_case_exactly_once(queue_url: str) -> None:
    with open_review_queue(queue_url) as queue:
        ids = [queue.submit(chain="race", question=f"q{i}", answer=f"a{i}").id
               for i in range(60)]
    go = FORK.Event()
    pipes = [FORK.Pipe(duplex=False) for _ in range(4)]
    racers = [FORK.Process(target=race_to_decide, args=(queue_url, ids, r, go, pipes[r][1]))
              for r in range(4)]
    for racer in racers:
        racer.start()
    go.set()
    results = [receiver.recv() for receiver, _ in pipes]
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    won = [case_id for ids_won, _ in results for case_id in ids_won]
    assert sorted(won) == sorted(ids)  # every case won once, by exactly one process
    assert sum(lost for _, lost in results) == 3 * len(ids)
    with open_review_queue(queue_url) as queue:
        assert queue.counts()["pending"] == 0
        for racer, (ids_won, _) in enumerate(results):
            for case_id in ids_won:
                assert queue.get(case_id).reviewer == f"racer-{racer}"
