"""The guard's decisions reach LangChain traces (a child run with the decision in its
metadata, as a tracer records it) and OpenTelemetry spans."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from semgrad_guard.policy import PolicyConfig
from semgrad_guard.testing import ScriptedScorer
from tests.spans import span_exporter

from langchain_semgrad_guard import SemGradCallbackHandler, guard_chain

POLICY = {"version": 1, "default": {"threshold": {"max_score": 0.5}, "actions": ["abstain"]},
          "chains": [{"name": "rag", "match": {"run_name": ["rag"]},
                      "threshold": {"max_score": 0.2}, "actions": ["abstain"]}]}
PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])


def chain(*answers: str) -> Any:
    return PROMPT | FakeListChatModel(responses=list(answers)) | StrOutputParser()


def decision_runs(runs: RunCollectorCallbackHandler) -> list[Any]:
    found, todo = [], list(runs.traced_runs)
    while todo:
        run = todo.pop()
        found += [run] if run.name == "semgrad_guard" else []
        todo += run.child_runs
    return found


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return span_exporter()


def test_a_decision_is_a_child_run_that_tracers_record(spans: InMemorySpanExporter) -> None:
    guarded = guard_chain(chain("Paris"), POLICY, scorer=ScriptedScorer([0.1]), name="rag")
    runs = RunCollectorCallbackHandler()
    assert guarded.invoke({"question": "Capital of France?"},
                          config={"callbacks": [runs]}) == "Paris"
    [root] = runs.traced_runs
    [run] = decision_runs(runs)
    assert run.parent_run_id == root.id  # under the guarded chain's run
    metadata = run.extra["metadata"]
    assert metadata["semgrad_guard.action"] == "pass"
    assert metadata["semgrad_guard.score"] == pytest.approx(0.1)
    assert metadata["semgrad_guard.rule"] == "rag"
    assert metadata["semgrad_guard.threshold.max_score"] == 0.2
    assert "semgrad_guard" in run.tags
    assert run.outputs is not None and run.outputs["value"] == pytest.approx(0.1)
    assert run.inputs == {"question": "Capital of France?", "answer": "Paris"}
    # The same decision is an OpenTelemetry span.
    [span] = [s for s in spans.get_finished_spans() if s.name == "semgrad_guard.decision"]
    assert dict(span.attributes or {})["semgrad_guard.rule"] == "rag"


def test_async_runs_record_the_decision_too() -> None:
    guarded = guard_chain(chain("Sydney"), POLICY, scorer=ScriptedScorer([0.9]), name="rag")
    runs = RunCollectorCallbackHandler()
    answer = asyncio.run(guarded.ainvoke({"question": "Capital of Australia?"},
                                         config={"callbacks": [runs]}))
    assert answer == "I am not confident enough in an answer to this question."
    [run] = decision_runs(runs)
    assert run.extra["metadata"]["semgrad_guard.action"] == "abstain"
    assert run.extra["metadata"]["semgrad_guard.passed"] is False


def test_astream_events_carries_the_decision() -> None:
    guarded = guard_chain(chain("Paris"), POLICY, scorer=ScriptedScorer([0.1]), name="rag")

    async def events() -> list[dict[str, Any]]:
        return [e async for e in guarded.astream_events({"question": "Capital?"},
                                                         version="v2")]

    ends = [e for e in asyncio.run(events())
            if e["event"] == "on_chain_end" and e["name"] == "semgrad_guard"]
    assert [e["data"]["output"]["action"] for e in ends] == ["pass"]
    assert ends[0]["metadata"]["semgrad_guard.score"] == pytest.approx(0.1)


def test_the_callback_handler_matches_rules_on_the_chains_run_name() -> None:
    handler = SemGradCallbackHandler(ScriptedScorer([0.3, 0.3]),
                                     policy=PolicyConfig.from_dict(POLICY))
    chain("Paris", "Paris").invoke({"question": "Capital?"},
                                   config={"run_name": "rag", "callbacks": [handler]})
    chain("Paris", "Paris").invoke({"question": "Capital?"}, config={"callbacks": [handler]})
    assert [(r.rule, r.threshold, r.passed) for r in handler.records] == [
        ("rag", 0.2, False), ("default", 0.5, True)]


def test_agent_middleware_decisions_are_runs_in_the_agents_trace() -> None:
    from langchain.agents import create_agent
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from semgrad_guard.policy import Guard

    from langchain_semgrad_guard import SemGradMiddleware

    class ToolCallingFake(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFake:
            return self

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return f"found {query}"

    turns = iter([AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"},
                                             "id": "c1", "type": "tool_call"}]),
                  AIMessage("All done.")])
    guard = Guard(PolicyConfig.from_dict(POLICY), scorer=ScriptedScorer([0.3, 0.1]))
    agent = create_agent(ToolCallingFake(messages=turns), tools=[lookup],
                         middleware=[SemGradMiddleware(guard)])
    runs = RunCollectorCallbackHandler()
    agent.invoke({"messages": [{"role": "user", "content": "Look up x."}]},
                 config={"callbacks": [runs]})
    recorded = [(r.extra["metadata"]["semgrad_guard.action"],
                 r.extra["metadata"]["semgrad_guard.score"]) for r in decision_runs(runs)]
    assert sorted(recorded) == [("pass", pytest.approx(0.1)), ("pass", pytest.approx(0.3))]
