"""An instrumentation event handler that records the score of every LLM call.

LlamaIndex's dispatcher swallows every exception an event handler raises, so a handler
can observe but never stop a pipeline: enforcement (abstain, retry, escalate) belongs
in :class:`GuardedQueryEngine`; this handler is for observability.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)

from semgrad_guard.model.prompts import Prompt
from semgrad_guard.serving import ServedAnswer, score_served

from .scores import SCORE_ERROR_KEY, SCORE_KEY, score_metadata
from .served import served_answer


@dataclass(frozen=True)
class LLMCallScore:
    """The score of one LLM call seen in a pipeline.

    ``score`` is the headline uncertainty (**higher = more uncertain**), ``None`` when
    the call carried no score and none could be computed (``error`` says why);
    ``source`` is ``"llm"`` (the :class:`SemGradLLM` scored its own generation) or
    ``"handler"`` (the handler re-scored the text: ``retokenized`` is true).
    """

    kind: str
    span_id: str | None
    text: str
    score: float | None
    method: str | None
    scores: dict[str, float]
    retokenized: bool | None
    source: str
    model: str | None
    error: str | None
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class UncertaintyEventHandler(BaseEventHandler):
    """Records the uncertainty of every LLM call (completion or chat, streamed or not).

    Answers of a :class:`SemGradLLM` carry their score; the handler reads it. Answers
    of any other LLM are re-scored from their text when ``scorer`` is given (flagged
    ``retokenized``), else recorded unscored. The handler only observes: LlamaIndex
    drops any exception a handler raises, so use :class:`GuardedQueryEngine` to act.

    >>> from llama_index.llms.semgrad_guard import SemGradLLM
    >>> handler = UncertaintyEventHandler().attach()     # on the root dispatcher
    >>> _ = SemGradLLM(max_new_tokens=8).complete("What is the chemical symbol of gold?")
    >>> [(r.kind, r.source, r.score > 0) for r in handler.records]
    [('completion', 'llm', True)]
    >>> handler.detach()
    """

    scorer: Any = Field(default=None, exclude=True,
                        description="A SemGradScorer to re-score answers of other LLMs.")
    on_record: Callable[[LLMCallScore], None] | None = Field(
        default=None, exclude=True, description="Called with every new record (e.g. a logger).")
    max_records: int = Field(default=10_000, ge=1, description="Records kept, oldest dropped.")

    _records: list[LLMCallScore] = PrivateAttr(default_factory=list)
    _prompts: dict[str, Prompt] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "UncertaintyEventHandler"

    @property
    def records(self) -> list[LLMCallScore]:
        """Every recorded call, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._prompts.clear()

    def attach(self, dispatcher_name: str = "root") -> UncertaintyEventHandler:
        """Register on a dispatcher (the root one sees every LLM call)."""
        get_dispatcher(dispatcher_name).add_event_handler(self)
        return self

    def detach(self, dispatcher_name: str = "root") -> None:
        """Remove this handler from a dispatcher."""
        dispatcher = get_dispatcher(dispatcher_name)
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not self]

    def summary(self) -> dict[str, Any]:
        """Count, scored count and the highest and mean score of the recorded calls."""
        values = [r.score for r in self.records if r.score is not None]
        return {"calls": len(self.records), "scored": len(values),
                "max": max(values) if values else None,
                "mean": sum(values) / len(values) if values else None}

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent):
            self._remember(event, [{"role": m.role.value, "content": m.content or ""}
                                   for m in event.messages])
        elif isinstance(event, LLMCompletionStartEvent):
            self._remember(event, event.prompt)
        elif isinstance(event, LLMChatEndEvent) and event.response is not None:
            self._record("chat", event, event.response.message.content or "",
                         event.response.additional_kwargs, served_answer(event.response))
        elif isinstance(event, LLMCompletionEndEvent):
            self._record("completion", event, event.response.text,
                         event.response.additional_kwargs)

    def _remember(self, event: BaseEvent, prompt: Prompt) -> None:
        if self.scorer is not None and event.span_id is not None:
            with self._lock:
                self._prompts[event.span_id] = prompt
                while len(self._prompts) > self.max_records:  # calls that never ended
                    del self._prompts[next(iter(self._prompts))]

    def _record(self, kind: str, event: BaseEvent, text: str, extra: dict[str, Any],
                served: ServedAnswer | None = None) -> None:
        with self._lock:
            prompt = self._prompts.pop(event.span_id, None) if event.span_id else None
        if SCORE_KEY in extra:  # a SemGradLLM answer: its own score, or why it has none
            source, data, error = "llm", extra[SCORE_KEY], extra.get(SCORE_ERROR_KEY)
        else:
            source = "handler"
            data, error = self._rescore(prompt, text, served)
        data = data if isinstance(data, dict) else {}
        record = LLMCallScore(kind=kind, span_id=event.span_id, text=text,
                              score=data.get("value"), method=data.get("method"),
                              scores=dict(data.get("scores") or {}),
                              retokenized=data.get("retokenized"), source=source,
                              model=data.get("model"), error=error)
        with self._lock:
            self._records.append(record)
            del self._records[:-self.max_records]
        if self.on_record is not None:
            self.on_record(record)

    def _rescore(self, prompt: Prompt | None, text: str, served: ServedAnswer | None = None
                 ) -> tuple[dict[str, Any] | None, str | None]:
        if self.scorer is None:
            return None, "the LLM gives no score and the handler has no scorer"
        if prompt is None or not text.strip():
            return None, "no prompt or an empty answer to score"
        try:
            if served is not None:  # a served model's answer: from the server's tokens
                return score_metadata(score_served(self.scorer, prompt, served)), None
            return score_metadata(self.scorer.score_text(prompt, text)), None
        except Exception as exc:  # recorded: observing must not hide why a score is missing
            return None, f"{type(exc).__name__}: {exc}"
