"""The README's escalation section runs as written: every shell and Python block."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from semgrad_guard.policy import AuditTrail
from semgrad_guard.review import open_review_queue

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(start: str, end: str) -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index(start):text.index(end, text.index(start))]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


class Receiver:
    def __init__(self, port: int) -> None:
        self.requests: list[tuple[Any, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_shell_line(line: str, env: dict[str, str], cwd: Path) -> None:
    line = line.split("  #", 1)[0].strip()
    if not line or line.startswith("#"):
        return
    if line.startswith("export "):
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
        return
    argv = shlex.split(re.sub(r'"\$(\w+)"', lambda m: shlex.quote(env[m.group(1)]), line))
    assert argv[0] == "semgrad-guard", line
    done = subprocess.run([sys.executable, "-m", "semgrad_guard.cli", *argv[1:]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (line, done.stdout, done.stderr)


def test_the_escalation_section_runs_as_written(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = section_blocks("## Escalation to a human", "## Benchmarks")
    assert [kind for kind, _ in blocks] == ["bash", "python", "bash", "python"]
    monkeypatch.chdir(tmp_path)
    queue_url = f"sqlite:///{tmp_path / 'review.db'}"
    with open_review_queue(queue_url) as queue:
        case = queue.submit(chain="support", question="q", answer="a")
    AuditTrail(tmp_path / "audit.db").close()
    env = {**os.environ, "SEMGRAD_GUARD_REVIEW_QUEUE": queue_url, "CASE_ID": case.id}
    env["PYTHONPATH"] = os.pathsep.join([str(README.parent), env.get("PYTHONPATH", "")])
    try:
        receiver: Receiver | None = Receiver(9000)
    except OSError:  # the port the README names is taken on this machine
        receiver = None
    namespace: dict[str, Any] = {}
    try:
        for kind, code in blocks:
            if kind == "python":
                exec(compile(code, "README.md", "exec"), namespace)
            else:
                for line in code.splitlines():
                    run_shell_line(line, env, tmp_path)
    finally:
        if receiver is not None:
            receiver.close()
        if "queue" in namespace:
            namespace["queue"].close()
        if "audit" in namespace:
            namespace["audit"].close()

    with open_review_queue(queue_url) as queue:
        assert queue.get(case.id).status == "approved"
    verify = namespace["verify_delivery"]
    secret = env["SEMGRAD_GUARD_WEBHOOK_SECRET"].encode()
    if receiver is not None:
        (headers, body), = receiver.requests
        assert verify(secret, headers, body)
        assert not verify(secret, headers, body + b"x")
        assert not verify(b"another-secret", headers, body)
        assert not verify(secret, headers, body, tolerance=-1)  # as if replayed later


def test_the_readme_verification_matches_the_library(tmp_path: Path) -> None:
    from semgrad_guard.review.webhook import WebhookConfig, WebhookSender, verify_signature

    code = dict(section_blocks("### Webhooks", "### Personal data"))["python"]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    sender = WebhookSender(WebhookConfig(url="http://127.0.0.1:9/x", secret="s3cret"))
    from semgrad_guard.review import EscalatedCase

    body = sender.payload(EscalatedCase(id="c1", chain="c", question="q", answer="a"), "d1")
    headers = sender.headers(body, "d1")
    assert namespace["verify_delivery"](b"s3cret", headers, body)
    assert verify_signature("s3cret", headers, body)
    sender.close()

