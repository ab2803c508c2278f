"""Every decision the guard records is an OpenTelemetry span with the decision's
attributes, a child of the caller's span, caught here by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from semgrad_guard.policy import AttemptResult, Guard, PolicyConfig
from semgrad_guard.testing import ScriptedScorer
from tests.spans import span_exporter

POLICY = {"version": 1, "default": {"threshold": {"max_score": 0.5}, "actions": ["abstain"]},
          "chains": [{"name": "rag", "match": {"run_name": ["rag"]},
                      "threshold": {"max_score": 0.2},
                      "actions": [{"type": "retry_with_retrieval", "k_schedule": [8]},
                                  "abstain"]}]}


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return span_exporter()


def test_a_decision_is_a_span_with_its_score_under_the_callers_span(
        spans: InMemorySpanExporter) -> None:
    guard = Guard(PolicyConfig.from_dict(POLICY), scorer=ScriptedScorer([0.3]))
    with trace.get_tracer("app").start_as_current_span("request") as request:
        decision = guard.check("What is gold?", "Au", run_name="support")
    [span] = [s for s in spans.get_finished_spans() if s.name == "semgrad_guard.decision"]
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["semgrad_guard.action"] == decision.action == "pass"
    assert attributes["semgrad_guard.passed"] is True
    assert attributes["semgrad_guard.score"] == pytest.approx(0.3)
    assert attributes["semgrad_guard.score.method"] == "semgrad"
    assert attributes["semgrad_guard.rule"] == "default"
    assert attributes["semgrad_guard.threshold.max_score"] == 0.5
    assert attributes["semgrad_guard.run_name"] == "support"
    assert attributes["semgrad_guard.attempts"] == 1
    assert "semgrad_guard.case_id" not in attributes  # nothing without a value


def test_retries_end_in_one_span_for_the_decision(spans: InMemorySpanExporter) -> None:
    guard = Guard(PolicyConfig.from_dict(POLICY), scorer=ScriptedScorer([0.9, 0.8]))

    async def attempt(attempt: object) -> AttemptResult:
        return AttemptResult(answer="Maybe", context=[])

    decision = asyncio.run(guard.arun("Late fee?", attempt, run_name="rag"))
    [span] = [s for s in spans.get_finished_spans() if s.name == "semgrad_guard.decision"]
    attributes = dict(span.attributes or {})
    assert (attributes["semgrad_guard.action"], attributes["semgrad_guard.rule"]) == (
        decision.action, "rag") == ("abstain", "rag")
    assert attributes["semgrad_guard.passed"] is False
    assert attributes["semgrad_guard.attempts"] == 2
    assert attributes["semgrad_guard.threshold.max_score"] == 0.2
