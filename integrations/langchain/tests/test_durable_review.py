"""A paused agent run survives its process: a durable LangGraph checkpointer (SQLite or
PostgreSQL) holds the run, the review queue holds the case with the run's thread, and a
restarted process resumes the run once a reviewer decides, by the decision callback or
by a sweep at start."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from semgrad_guard.cli import main
from semgrad_guard.policy import AuditTrail, Guard, load_policy
from semgrad_guard.testing import ScriptedScorer

from langchain_semgrad_guard import ReviewResumer, SemGradMiddleware

FORK = multiprocessing.get_context("fork")
ASK = {"messages": [{"role": "user", "content": "Email Bob that the order shipped."}]}


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools (the agent binds them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFake:
        return self


class Setup:
    """Where one deployment keeps its state: a policy file naming the review queue, the
    audit trail, the checkpointer, and an outbox file the email tool writes to."""

    def __init__(self, folder: Path, queue_url: str, checkpoints: str) -> None:
        self.folder = folder
        self.queue_url = queue_url
        self.checkpoints = checkpoints  # a SQLite file path or a PostgreSQL URL
        self.outbox = folder / "sent.jsonl"
        self.policy = folder / "policy.yaml"
        self.policy.write_text(
            "version: 1\n"
            "default:\n  threshold: {max_score: 0.5}\n  actions: [abstain]\n"
            "chains:\n  - name: send_email\n"
            f"    actions: [{{type: escalate, queue: \"{queue_url}\"}}]\n")

    def sent(self) -> list[dict[str, str]]:
        if not self.outbox.exists():
            return []
        return [json.loads(line) for line in self.outbox.read_text().splitlines()]

    @contextmanager
    def agent(self, turns: list[AIMessage], scores: list[float]) -> Iterator[tuple[Any, Guard]]:
        outbox = self.outbox

        @tool
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            with outbox.open("a") as out:
                out.write(json.dumps({"to": to, "body": body}) + "\n")
            return f"sent to {to}"

        with _checkpointer(self.checkpoints) as checkpointer, \
                AuditTrail(self.folder / "audit.db") as audit, \
                Guard(load_policy(self.policy), scorer=ScriptedScorer(scores),
                      audit=audit) as guard:
            agent = create_agent(ToolCallingFake(messages=iter(turns)), tools=[send_email],
                                 middleware=[SemGradMiddleware(guard)],
                                 checkpointer=checkpointer)
            yield agent, guard


@contextmanager
def _checkpointer(where: str) -> Iterator[Any]:
    if where.startswith("postgresql://"):
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(where) as saver:
            saver.setup()
            yield saver
    else:
        from langgraph.checkpoint.sqlite import SqliteSaver

        connection = sqlite3.connect(where, check_same_thread=False)
        try:
            yield SqliteSaver(connection)
        finally:
            connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    if request.param == "sqlite":
        return Setup(tmp_path, f"sqlite:///{tmp_path / 'review.db'}",
                     str(tmp_path / "threads.db"))
    url = str(request.getfixturevalue("postgres_url"))
    return Setup(tmp_path, url, url)


def _email(to: str, call_id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "send_email", "id": call_id, "type": "tool_call",
                                      "args": {"to": to, "body": "Your order shipped."}}])


def _pause_then_wait_to_be_killed(setup: Setup, fd: int) -> None:
    # The first process: an uncertain email pauses the run for review.
    with setup.agent([_email("bob@exmaple.org", "c1")], [0.9]) as (agent, _):
        result = agent.invoke(ASK, {"configurable": {"thread_id": "ticket-7"}})
        (paused,) = result["__interrupt__"]
        os.write(fd, f"paused {paused.value['case_id']}\n".encode())
        signal.pause()  # until SIGKILL


def test_a_run_paused_for_review_is_resumed_after_a_restart(
        setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    first = FORK.Process(target=_pause_then_wait_to_be_killed, args=(setup, write_end))
    first.start()
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        line = lines.readline()
    assert line.startswith("paused "), line
    case_id = line.split()[1]
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    first.join(30)
    assert first.exitcode == -signal.SIGKILL
    assert setup.sent() == []

    # While the application is down, a reviewer corrects the address from the terminal.
    edited = json.dumps({"to": "bob@example.org", "body": "Your order shipped."})
    assert main(["review", "edit", case_id[:8], "--queue", setup.queue_url,
                 "--answer", edited, "--reviewer", "ann"]) == 0
    capsys.readouterr()

    # The restarted application resumes what was decided while it was down ...
    results: dict[str, Any] = {}
    with setup.agent([AIMessage("Bob has been told."), _email("carol@exmaple.org", "c2"),
                      AIMessage("Carol has been told.")], [0.1, 0.95, 0.1]) as (agent, guard):
        resumer = ReviewResumer(agent, guard, on_result=results.__setitem__).attach()
        assert resumer.resume_decided() == ["ticket-7"]
        assert setup.sent() == [{"to": "bob@example.org", "body": "Your order shipped."}]
        assert results["ticket-7"]["messages"][-1].content == "Bob has been told."
        tool_message = next(m for m in results["ticket-7"]["messages"]
                            if isinstance(m, ToolMessage))
        assert tool_message.content == "sent to bob@example.org"
        assert resumer.resume_decided() == []  # nothing is resumed twice

        # ... and a run that pauses now resumes the moment its case is decided.
        config: Any = {"configurable": {"thread_id": "ticket-8"}}
        paused = agent.invoke(ASK, config)["__interrupt__"]
        second = paused[0].value["case_id"]
        assert guard.review_queue.get(second).metadata["thread_id"] == "ticket-8"
        guard.review_queue.approve(second[:6], reviewer="ann")
        assert results["ticket-8"]["messages"][-1].content == "Carol has been told."
        assert setup.sent()[-1]["to"] == "carol@exmaple.org"  # approved as it was
        assert agent.get_state(config).interrupts == ()
        decisions = [(r.chain, r.action) for r in guard.audit.records()]  # type: ignore[union-attr]
    assert decisions == [("send_email", "escalate"), ("default", "pass"),
                         ("send_email", "escalate"), ("default", "pass")]


def test_attaching_twice_resumes_each_decision_once(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from semgrad_guard.policy import PolicyConfig
    from semgrad_guard.review import open_review_queue

    queue = open_review_queue(f"sqlite:///{tmp_path / 'review.db'}")
    guard = Guard(PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "actions": ["escalate"]}}), review_queue=queue)
    agent = create_agent(ToolCallingFake(messages=iter([])),
                         middleware=[SemGradMiddleware(guard)], checkpointer=InMemorySaver())
    resumed: list[str] = []

    class Counting(ReviewResumer):
        def resume(self, case: Any) -> Any:
            resumed.append(case.id)
            return super().resume(case)

    Counting(agent, guard).attach().attach()
    case = queue.submit(chain="default", question="Ship it?", answer="Yes.")
    queue.approve(case.id, reviewer="ann")
    assert resumed == [case.id]
    queue.close()


def test_a_case_id_is_resumed_from_whichever_queue_holds_it(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from semgrad_guard.errors import CaseNotFoundError

    emails, other = f"sqlite:///{tmp_path / 'emails.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "default:\n  threshold: {max_score: 0.5}\n"
        f"  actions: [{{type: escalate, queue: \"{other}\"}}]\n"
        "chains:\n  - name: send_email\n"
        f"    actions: [{{type: escalate, queue: \"{emails}\"}}]\n")

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        return f"sent to {to}"

    turns = [_email("bob@example.org", "c1"), AIMessage("Bob has been told.")]
    with Guard(load_policy(policy), scorer=ScriptedScorer([0.9, 0.1])) as guard:
        assert len(guard.review_queues) == 2
        agent = create_agent(ToolCallingFake(messages=iter(turns)), tools=[send_email],
                             middleware=[SemGradMiddleware(guard)], checkpointer=InMemorySaver())
        config: Any = {"configurable": {"thread_id": "ticket-9"}}
        case_id = agent.invoke(ASK, config)["__interrupt__"][0].value["case_id"]
        guard.queue_for("send_email").approve(case_id, reviewer="ann")
        resumer = ReviewResumer(agent, guard)
        result = resumer.resume(case_id[:8])  # an id prefix, as the review CLI takes it
        assert result["messages"][-1].content == "Bob has been told."
        with pytest.raises(CaseNotFoundError, match="other.db, .*emails.db"):
            resumer.resume("no-such-case")
