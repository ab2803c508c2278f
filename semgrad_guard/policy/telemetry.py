"""The guard's decisions where tracing tools look: OpenTelemetry spans, and flat
attributes that framework traces (LangChain run metadata) carry too.

Every decision a :class:`~semgrad_guard.policy.Guard` records becomes one
``semgrad_guard.decision`` span, a child of whatever span is current (the request, the
chain), with the attributes of :func:`decision_attributes`. It uses the OpenTelemetry
API only: with no tracer provider configured the span is a no-op, and an application
that configures one (the SDK, an exporter) sees the decisions without further set-up.

>>> from semgrad_guard.policy import GuardDecision
>>> decision = GuardDecision(action="abstain", answer="I am not sure.", passed=False,
...     score=None, error_probability=None, attempts=[], rule="rag", case_id=None,
...     reason="score over threshold")
>>> decision_attributes(decision, run_name="rag")
{'semgrad_guard.action': 'abstain', 'semgrad_guard.passed': False, 'semgrad_guard.rule': 'rag', 'semgrad_guard.reason': 'score over threshold', 'semgrad_guard.attempts': 0, 'semgrad_guard.run_name': 'rag'}
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from .._version import __version__
from .config import Threshold
from .decision import GuardDecision

#: The name of the span each decision is recorded as.
SPAN_NAME = "semgrad_guard.decision"


def decision_attributes(decision: GuardDecision, run_name: str | None = None,
                        threshold: Threshold | None = None) -> dict[str, Any]:
    """A decision as flat attributes (strings, numbers, booleans, lists of strings).

    ``semgrad_guard.score`` is the value the rule read (``semgrad_guard.score.method``
    names the score; higher = more uncertain), against the rule's
    ``semgrad_guard.threshold.max_score`` or ``...max_error_probability``; attributes
    that have no value in this decision are left out.
    """
    score = decision.score
    values: dict[str, Any] = {
        "semgrad_guard.action": decision.action,
        "semgrad_guard.passed": decision.passed,
        "semgrad_guard.rule": decision.rule,
        "semgrad_guard.reason": decision.reason,
        "semgrad_guard.score": decision.value,
        "semgrad_guard.score.method": None if score is None else score.method,
        "semgrad_guard.error_probability": decision.error_probability,
        "semgrad_guard.attempts": len(decision.attempts),
        "semgrad_guard.case_id": decision.case_id,
        "semgrad_guard.flags": list(decision.flags) or None,
        "semgrad_guard.run_name": run_name,
        "semgrad_guard.threshold.max_score": None if threshold is None else threshold.max_score,
        "semgrad_guard.threshold.max_error_probability":
            None if threshold is None else threshold.max_error_probability,
    }
    return {key: value for key, value in values.items() if value is not None}


def trace_decision(decision: GuardDecision, run_name: str | None = None,
                   threshold: Threshold | None = None) -> None:
    """Record a decision as a ``semgrad_guard.decision`` span (a no-op without a tracer
    provider)."""
    tracer = trace.get_tracer("semgrad_guard", __version__)
    with tracer.start_as_current_span(SPAN_NAME) as span:
        if span.is_recording():
            span.set_attributes(decision_attributes(decision, run_name, threshold))
