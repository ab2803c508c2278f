"""Code the durability tests run in child processes (forked, so no re-import cost)."""

from __future__ import annotations

import os
import threading
from typing import Any

from semgrad_guard.review import CaseAlreadyDecidedError, open_review_queue

#: Large enough that a SIGKILL usually lands while SQLite is writing pages.
BIG_DOCUMENT = "retrieved passage " * 12_000


def write_until_killed(url: str, fd: int, start: int) -> None:
    """Escalate cases for ever, reporting on ``fd``: ``start N`` before each submit,
    ``done ID N`` once it returned (committed)."""
    queue = open_review_queue(url)
    number = start
    while True:
        os.write(fd, f"start {number}\n".encode())
        case = queue.submit(chain="crash", question=f"question {number}",
                            answer=f"answer {number} " + BIG_DOCUMENT,
                            context=[BIG_DOCUMENT, f"doc {number}"], score=float(number),
                            metadata={"number": number})
        os.write(fd, f"done {case.id} {number}\n".encode())
        number += 1


def write_cases(url: str, writer: int, count: int, threads: int, out: Any) -> None:
    """Escalate ``count`` cases from ``threads`` threads sharing one queue; send the ids."""
    queue = open_review_queue(url)
    ids: list[str] = []
    lock = threading.Lock()

    def work(thread: int) -> None:
        for n in range(thread, count, threads):
            case = queue.submit(chain=f"writer-{writer}", question=f"w{writer} q{n}",
                                answer=f"w{writer} a{n}", score=n / 1000,
                                components={"semgrad": n / 1000}, metadata={"n": n})
            with lock:
                ids.append(case.id)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.close()
    out.send(ids)
    out.close()


def race_to_decide(url: str, case_ids: list[str], racer: int, go: Any, out: Any) -> None:
    """Try to decide every case; report the ids this process won and how many it lost."""
    queue = open_review_queue(url)
    won: list[str] = []
    lost = 0
    go.wait()
    for case_id in case_ids:
        try:
            if racer % 3 == 0:
                queue.approve(case_id, reviewer=f"racer-{racer}")
            elif racer % 3 == 1:
                queue.edit(case_id, answer=f"edit by {racer}", reviewer=f"racer-{racer}")
            else:
                queue.reject(case_id, reviewer=f"racer-{racer}", reason="race")
            won.append(case_id)
        except CaseAlreadyDecidedError:
            lost += 1
    queue.close()
    out.send((won, lost))
    out.close()
