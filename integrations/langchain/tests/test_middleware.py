"""The agent middleware on real ``create_agent`` agents: tool calls passed, refused
(abstain) or escalated by the policy; interrupts resumed from the review queue decide as before,
from the score cached in agent state."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig
from semgrad_guard.review import open_review_queue
from semgrad_guard.testing import ScriptedScorer

from langchain_semgrad_guard.middleware import (
    INTERRUPT_TYPE,
    SemGradMiddleware,
    resume_from_review,
    review_decision,
)

POLICY = {
    "version": 1,
    "default": {"threshold": {"max_score": 0.5},
                "actions": [{"type": "abstain", "message": "I am not sure."}]},
    "chains": [
        {"name": "send_email", "actions": [{"type": "escalate"}]},
        {"name": "lookup", "threshold": {"max_score": 0.95}},
    ],
}


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools (the agent binds them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFake:
        return self


def _call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


class Outbox:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        self.lookups: list[str] = []

        @tool
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.sent.append({"to": to, "body": body})
            return f"sent to {to}"

        @tool
        def lookup(query: str) -> str:
            """Look something up."""
            self.lookups.append(query)
            return f"found {query}"

        self.tools = [send_email, lookup]


def _agent(turns: list[AIMessage], scores: list[float], *, escalation: str = "interrupt",
           extra: list[Any] | None = None) -> tuple[Any, Outbox, ScriptedScorer, Any, Guard]:
    outbox = Outbox()
    scorer = ScriptedScorer(scores)
    queue = open_review_queue("sqlite:///:memory:")
    guard = Guard(PolicyConfig.from_dict(POLICY), scorer=scorer, audit=AuditTrail(),
                  review_queue=queue)
    middleware = SemGradMiddleware(guard, escalation=escalation)  # type: ignore[arg-type]
    stack: list[Any] = [middleware, *(extra(middleware) if callable(extra) else [])]
    model = ToolCallingFake(messages=iter(turns))
    agent = create_agent(model, tools=outbox.tools, middleware=stack,
                         checkpointer=InMemorySaver())
    return agent, outbox, scorer, queue, guard


def _turns(*calls: dict[str, Any]) -> list[AIMessage]:
    return [AIMessage("", tool_calls=list(calls)), AIMessage("All done.")]


CONFIG: Any = {"configurable": {"thread_id": "t1"}}
ASK: Any = {"messages": [{"role": "user", "content": "Email bob and look up the weather."}]}


def _tool_messages(result: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


def test_a_certain_tool_call_runs_and_the_score_is_cached_in_state() -> None:
    agent, outbox, scorer, _, guard = _agent(
        _turns(_call("lookup", {"query": "weather"}, "c1")), [0.3, 0.1])
    result = agent.invoke(ASK, CONFIG)
    assert outbox.lookups == ["weather"]
    cached = list(result["semgrad"].values())
    assert cached[0]["tool_calls"]["c1"]["action"] == "pass"
    assert cached[0]["value"] == pytest.approx(0.3)
    assert cached[1]["answer"]["action"] == "pass"
    assert result["messages"][-1].content == "All done."
    assert [r.chain for r in guard.audit.records()] == ["lookup", "default"]  # type: ignore[union-attr]
    assert scorer.remaining == 0


def test_an_uncertain_tool_call_is_blocked_with_an_error_tool_message() -> None:
    agent, outbox, _, _, _ = _agent(
        _turns(_call("lookup", {"query": "weather"}, "c1"),
               _call("unlisted", {}, "c2")), [0.99, 0.1])
    result = agent.invoke(ASK, CONFIG)
    assert outbox.lookups == []
    blocked = next(m for m in _tool_messages(result) if m.tool_call_id == "c1")
    assert blocked.status == "error"
    assert "lookup was not run" in str(blocked.content)
    assert "0.99" in str(blocked.content)


def test_tools_outside_the_gated_set_always_run() -> None:
    outbox = Outbox()
    guard = Guard(PolicyConfig.from_dict(POLICY), scorer=ScriptedScorer([0.99, 0.1]),
                  review_queue=open_review_queue("sqlite:///:memory:"))
    agent = create_agent(ToolCallingFake(messages=iter(_turns(
        _call("lookup", {"query": "x"}, "c1")))), tools=outbox.tools,
        middleware=[SemGradMiddleware(guard, tools=["send_email"])])
    agent.invoke(ASK)
    assert outbox.lookups == ["x"]


def test_an_uncertain_final_answer_is_replaced_by_the_abstention() -> None:
    agent, _, _, _, _ = _agent([AIMessage("Probably 42.")], [0.9])
    result = agent.invoke(ASK, CONFIG)
    assert result["messages"][-1].content == "I am not sure."
    assert list(result["semgrad"].values())[0]["answer"]["chosen_answer"] == "Probably 42."


def _paused(agent: Any) -> tuple[dict[str, Any], Any]:
    result = agent.invoke(ASK, CONFIG)
    interrupts = result["__interrupt__"]
    assert len(interrupts) == 1 and interrupts[0].value["type"] == INTERRUPT_TYPE
    return result, interrupts


@pytest.mark.parametrize("decide", ["approve", "edit", "reject"])
def test_escalated_tool_call_resumes_with_the_reviewers_decision(decide: str) -> None:
    agent, outbox, scorer, queue, guard = _agent(
        _turns(_call("send_email", {"to": "bob", "body": "hi"}, "c1")), [0.8, 0.1])
    _, interrupts = _paused(agent)
    value = interrupts[0].value
    assert outbox.sent == []
    assert value["name"] == "send_email" and value["value"] == pytest.approx(0.8)
    case = queue.get(value["case_id"])
    assert case.status == "pending" and case.score == pytest.approx(0.8)
    if decide == "approve":
        queue.approve(case.id, reviewer="ann")
    elif decide == "edit":
        queue.edit(case.id, answer='{"to": "bob", "body": "Hello Bob"}', reviewer="ann")
    else:
        queue.reject(case.id, reviewer="ann", reason="wrong recipient")
    result = agent.invoke(resume_from_review(interrupts, queue), CONFIG)
    expected = {"approve": [{"to": "bob", "body": "hi"}],
                "edit": [{"to": "bob", "body": "Hello Bob"}], "reject": []}[decide]
    assert outbox.sent == expected
    if decide == "reject":
        message = _tool_messages(result)[0]
        assert message.status == "error" and "wrong recipient" in str(message.content)
    # Resuming read the cached decision: one score per model turn, one case, one audit
    # record per decision.
    assert scorer.remaining == 0 and len(scorer.calls) == 2
    assert len(queue.list()) == 1
    assert [r.action for r in guard.audit.records()] == ["escalate", "pass"]  # type: ignore[union-attr]


def test_resuming_with_a_plain_decision_works_too() -> None:
    agent, outbox, _, _, _ = _agent(
        _turns(_call("send_email", {"to": "bob", "body": "hi"}, "c1")), [0.8, 0.1])
    _paused(agent)
    agent.invoke(Command(resume={"type": "approve"}), CONFIG)
    assert outbox.sent == [{"to": "bob", "body": "hi"}]


def test_an_escalated_final_answer_takes_the_reviewers_text() -> None:
    policy = {"version": 1, "default": {"threshold": {"max_score": 0.5},
                                        "actions": ["escalate"]}}
    queue = open_review_queue("sqlite:///:memory:")
    guard = Guard(PolicyConfig.from_dict(policy), scorer=ScriptedScorer([0.9]),
                  review_queue=queue)
    agent = create_agent(ToolCallingFake(messages=iter([AIMessage("Maybe Lyon.")])),
                         tools=[], middleware=[SemGradMiddleware(guard)],
                         checkpointer=InMemorySaver())
    _, interrupts = _paused(agent)
    queue.edit(interrupts[0].value["case_id"], answer="Paris.", reviewer="ann")
    result = agent.invoke(resume_from_review(interrupts, queue), CONFIG)
    assert result["messages"][-1].content == "Paris."


def test_human_in_the_loop_middleware_pauses_only_escalated_calls() -> None:
    agent, outbox, scorer, queue, _ = _agent(
        _turns(_call("send_email", {"to": "bob", "body": "hi"}, "c1"),
               _call("lookup", {"query": "weather"}, "c2")), [0.8, 0.1],
        escalation="hitl",
        extra=lambda mw: [HumanInTheLoopMiddleware(
            interrupt_on=mw.interrupt_on(["send_email", "lookup"]))])  # type: ignore[arg-type]
    result = agent.invoke(ASK, CONFIG)
    requests = result["__interrupt__"][0].value["action_requests"]
    assert [r["name"] for r in requests] == ["send_email"]
    assert outbox.sent == [] and outbox.lookups == []
    case = queue.list()[0]
    queue.edit(case.id, answer='{"to": "bob", "body": "Hello"}', reviewer="ann")
    decision = review_decision(queue.get(case.id), name="send_email")
    agent.invoke(Command(resume={"decisions": [decision]}), CONFIG)
    assert outbox.sent == [{"to": "bob", "body": "Hello"}]
    assert outbox.lookups == ["weather"]
    assert scorer.remaining == 0


@pytest.mark.asyncio
async def test_async_agent_blocks_and_escalates_like_the_sync_one() -> None:
    agent, outbox, scorer, queue, _ = _agent(
        _turns(_call("send_email", {"to": "bob", "body": "hi"}, "c1"),
               _call("lookup", {"query": "weather"}, "c2")), [0.97, 0.1])
    result = await agent.ainvoke(ASK, CONFIG)
    interrupts = result["__interrupt__"]
    assert outbox.lookups == []  # 0.97 is over lookup's 0.95: blocked
    queue.approve(interrupts[0].value["case_id"], reviewer="ann")
    result = await agent.ainvoke(resume_from_review(interrupts, queue), CONFIG)
    assert outbox.sent == [{"to": "bob", "body": "hi"}]
    assert outbox.lookups == []
    assert scorer.remaining == 0




@pytest.mark.parametrize(("word", "runs"), [("allow", True), ("block", False)])
def test_gates_saved_by_the_previous_release_still_decide(word: str, runs: bool) -> None:
    from langgraph.prebuilt.tool_node import ToolCallRequest

    middleware = SemGradMiddleware(Guard(PolicyConfig.from_dict(POLICY),
                                         review_queue=open_review_queue("sqlite:///:memory:")))
    call = _call("lookup", {"query": "weather"}, "c1")
    gate = {"name": "lookup", "action": word, "value": 0.99, "threshold": 0.95,
            "method": "semgrad", "reason": "over the threshold", "case_id": None}
    state = {"messages": [], "semgrad": {"m1": {"tool_calls": {"c1": gate}}}}
    request = ToolCallRequest(tool_call=call, tool=None, state=state, runtime=None)  # type: ignore[arg-type]
    ran = ToolMessage("found weather", tool_call_id="c1", name="lookup")
    outcome = middleware.wrap_tool_call(request, lambda _: ran)
    assert (outcome is ran) == runs
    if not runs:
        assert isinstance(outcome, ToolMessage) and outcome.status == "error"
        assert "lookup was not run" in str(outcome.content)
