"""Model text never drives the reviewer's terminal: control characters are escaped."""

from __future__ import annotations

import json

import pytest

from semgrad_guard.cli import main
from semgrad_guard.review import open_review_queue

# Clear the screen, write "pwned" to the clipboard (OSC 52), ring the bell, an 8-bit CSI,
# and a right-to-left override that reorders what follows on screen.
HOSTILE = "\x1b[2J\x1b]52;c;cHduZWQ=\x07\a ok \x9b31m \u202eevil"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def test_list_and_show_escape_control_characters(sqlite_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with open_review_queue(sqlite_url) as queue:
        case = queue.submit(chain="rag" + HOSTILE, question="q" + HOSTILE,
                            answer="a" + HOSTILE, context=["doc" + HOSTILE],
                            metadata={"user" + HOSTILE: HOSTILE}, rule="r" + HOSTILE)
        queue.reject(case.id, reviewer="alice", reason="why" + HOSTILE)
    for argv in (["list", "--status", "all"], ["show", case.id],
                 ["list", "--status", "all", "--json"], ["show", case.id, "--json"]):
        assert main(["review", *argv, "--queue", sqlite_url]) == 0
        out, _ = capsys.readouterr()
        for char in RAW:
            assert char not in out, (argv, char)
        if "--json" in argv:
            shown = json.loads(out)
            shown = shown[0] if isinstance(shown, list) else shown
            assert shown["answer"] == "a" + HOSTILE  # JSON escapes, the data is intact
        else:
            assert "\\x1b]52;c;" in out  # visible, not interpreted
    # Multi-line text keeps its lines in `show`.
    with open_review_queue(sqlite_url) as queue:
        lines = queue.submit(chain="c", question="one\ntwo\tthree", answer="a")
    assert main(["review", "show", lines.id, "--queue", sqlite_url]) == 0
    out, _ = capsys.readouterr()
    assert "    one\n    two\tthree" in out


def test_error_messages_escape_control_characters(sqlite_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "show", "id" + HOSTILE, "--queue", sqlite_url, "--create"]) == 2
    _, err = capsys.readouterr()
    assert "no escalated case" in err
    for char in RAW:
        assert char not in err
