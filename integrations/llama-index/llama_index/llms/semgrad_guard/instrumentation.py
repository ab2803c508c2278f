"""The guard in LlamaIndex's instrumentation: its decisions as events, and the score on
the responses of plain query engines.

- :class:`GuardDecisionEvent` is dispatched whenever a :class:`GuardedQueryEngine`, a
  :class:`GuardedChatEngine` or a :class:`SemGradEvaluator` decides. It goes through
  this package's dispatcher to the root one, so every event handler (an observability
  integration, :class:`UncertaintyEventHandler`, your own) receives it, with the
  ``span_id`` of the query or chat that decided.
- :class:`ScoreSpanHandler` is a span handler on the root dispatcher, registered once a
  :class:`SemGradLLM` or :class:`SemGradEvaluator` exists. When any query engine's
  ``query`` / ``aquery`` span or any chat engine's ``chat`` / ``achat`` span ends
  (``index.as_query_engine()`` and ``index.as_chat_engine()`` included), it puts the
  score of the last answer a :class:`SemGradLLM` wrote inside that span into the
  response's ``metadata["semgrad"]``; when a ``RetryQueryEngine`` judged by a
  :class:`SemGradEvaluator` returns the answer of its last retry (which LlamaIndex
  returns without evaluating it), it has the evaluator decide on that answer too, so
  the response says ``metadata["uncertain"]`` when every retry failed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextvars import Token
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine
from llama_index.core.instrumentation import get_dispatcher, root_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

from semgrad_guard.policy import GuardDecision

from .scores import (
    DECISION_KEY,
    SCORE_ERROR_KEY,
    SCORE_KEY,
    UNCERTAIN_KEY,
    ScoredCompletion,
    score_metadata,
)

__all__ = ["GuardDecisionEvent", "ScoreSpanHandler", "decision_metadata", "dispatch_decision",
           "ensure_instrumented"]

dispatcher = get_dispatcher(__name__)


class GuardDecisionEvent(BaseEvent):
    """What the guard decided on one answer, as an instrumentation event.

    ``component`` names what decided (``GuardedQueryEngine``, ``GuardedChatEngine``,
    ``SemGradEvaluator``); ``value`` is the score the rule read (**higher = more
    uncertain**; ``None`` when it could not be computed); ``decision`` is
    :meth:`GuardDecision.to_dict`.
    """

    component: str
    rule: str
    action: str
    passed: bool
    method: str | None = None
    value: float | None = None
    error_probability: float | None = None
    case_id: str | None = None
    reason: str = ""
    flags: list[str] = []
    attempts: int = 0
    decision: dict[str, Any] = {}

    @classmethod
    def class_name(cls) -> str:
        return "GuardDecisionEvent"

    @classmethod
    def of(cls, decision: GuardDecision, component: str) -> GuardDecisionEvent:
        return cls(component=component, rule=decision.rule, action=decision.action,
                   passed=decision.passed,
                   method=None if decision.score is None else decision.score.method,
                   value=decision.value, error_probability=decision.error_probability,
                   case_id=decision.case_id, reason=decision.reason, flags=list(decision.flags),
                   attempts=len(decision.attempts), decision=decision.to_dict())


def dispatch_decision(decision: GuardDecision, component: str) -> None:
    """Send a decision to every instrumentation event handler."""
    dispatcher.event(GuardDecisionEvent.of(decision, component))


def decision_metadata(decision: GuardDecision) -> dict[str, Any]:
    """What a response's ``metadata`` says about a decision: the chosen attempt's score
    (or why there is none), the decision, and whether the answer stayed uncertain."""
    metadata: dict[str, Any] = {
        SCORE_KEY: None if decision.score is None else score_metadata(decision.score),
        DECISION_KEY: decision.to_dict(),
        UNCERTAIN_KEY: not decision.passed,
    }
    chosen = decision.chosen
    if chosen is not None and chosen.error is not None:
        metadata[SCORE_ERROR_KEY] = chosen.error
    return metadata


def score_of_calls(calls: Sequence[ScoredCompletion]) -> dict[str, Any]:
    """The ``semgrad`` metadata of the last of these answers (the one a response holds)."""
    if not calls:
        return {}
    last = calls[-1]
    metadata: dict[str, Any] = {SCORE_KEY: None if last.score is None
                                else score_metadata(last.score)}
    if last.error is not None:
        metadata[SCORE_ERROR_KEY] = last.error
    return metadata


#: The spans whose response gets the score: a query engine's query, a chat engine's turn.
_SCORED_SPANS = ((BaseQueryEngine, ("query", "aquery")), (BaseChatEngine, ("chat", "achat")))


class ScoreSpanHandler(BaseSpanHandler[SimpleSpan]):
    """Puts the score of a SemGradLLM's answer on the response of any query or chat
    engine, and
    has a :class:`SemGradEvaluator` decide on the unevaluated last answer of a
    ``RetryQueryEngine`` (see the module's notes). Observes spans only: it keeps none."""

    _open: dict[str, tuple[Token[Any], list[ScoredCompletion]]] = PrivateAttr(
        default_factory=dict)
    _guard: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "ScoreSpanHandler"

    def new_span(self, id_: str, bound_args: Any, instance: Any | None = None,
                 parent_span_id: str | None = None, tags: dict[str, Any] | None = None,
                 **kwargs: Any) -> SimpleSpan | None:
        if any(isinstance(instance, kind) and _method(id_) in methods
               for kind, methods in _SCORED_SPANS):
            from .base import start_recording

            token, calls = start_recording()
            with self._guard:
                self._open[id_] = (token, calls)
        return None

    def prepare_to_exit_span(self, id_: str, bound_args: Any, instance: Any | None = None,
                             result: Any | None = None, **kwargs: Any) -> SimpleSpan | None:
        calls = self._close(id_)
        if calls is None or not isinstance(result, Response | AgentChatResponse):
            return None
        metadata = dict(result.metadata or {})
        if SCORE_KEY not in metadata:
            metadata.update(score_of_calls(calls))
        result.metadata = metadata
        if isinstance(result, Response):
            _mark_last_retry(instance, bound_args, result)
        return None

    def prepare_to_drop_span(self, id_: str, bound_args: Any, instance: Any | None = None,
                             err: BaseException | None = None, **kwargs: Any
                             ) -> SimpleSpan | None:
        self._close(id_)
        return None

    def _close(self, id_: str) -> list[ScoredCompletion] | None:
        from .base import stop_recording

        with self._guard:
            opened = self._open.pop(id_, None)
        if opened is None:
            return None
        stop_recording(opened[0])
        return opened[1]


def _method(span_id: str) -> str:
    # Span ids read "ClassName.method-<uuid>".
    return span_id.split("-", 1)[0].rpartition(".")[2]


def _mark_last_retry(instance: Any, bound_args: Any, result: Response) -> None:
    from llama_index.core.query_engine import RetryQueryEngine

    from .evaluator import SemGradEvaluator

    if not isinstance(instance, RetryQueryEngine) or DECISION_KEY in (result.metadata or {}):
        return
    evaluator = getattr(instance, "_evaluator", None)
    if not isinstance(evaluator, SemGradEvaluator):
        return
    query = bound_args.arguments.get("str_or_query_bundle")
    query_str = getattr(query, "query_str", query)
    evaluator.evaluate_response(query=str(query_str or ""), response=result)


_HANDLER: ScoreSpanHandler | None = None
_REGISTERING = threading.Lock()


def ensure_instrumented() -> ScoreSpanHandler:
    """Register the :class:`ScoreSpanHandler` on the root dispatcher (once per process)."""
    global _HANDLER
    with _REGISTERING:
        if _HANDLER is None or not any(h is _HANDLER for h in root_dispatcher.span_handlers):
            _HANDLER = ScoreSpanHandler()
            root_dispatcher.add_span_handler(_HANDLER)
        return _HANDLER
