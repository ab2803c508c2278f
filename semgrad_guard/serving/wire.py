"""What travels between the scoring service and its clients.

A request holds items of one of three shapes: exact ids (``prompt_ids``,
``response_ids``), an answer known as text (``messages`` or ``question``, and ``answer``),
or an answer a model server generated (the same, and the server's ``served`` tokens).
A ``question`` is a :class:`~semgrad_guard.QAPrompt`'s: the service asks it in its model's
own prompt format, as the scorer in process does (a base model's plain prompt, with its
instruction and demonstrations; an instruct model's chat message), where ``messages`` are
rendered as they are.
Each result is a whole :class:`~semgrad_guard.UncertaintyScore` (every score, component
and field, whatever the scorer computes) or an error naming its type, so one bad item
never fails its neighbours.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import errors
from ..errors import RemoteScoringError, ScoringError
from ..model.prompts import Prompt, qa_prompt
from ..scoring.result import UncertaintyScore

#: The most items one request may carry.
MAX_ITEMS = 256

#: The version of this format, in ``GET /v1/model``. Version 2 added ``question`` items;
#: a service of version 1 refuses them (:class:`~semgrad_guard.errors.ServiceVersionError`).
WIRE_VERSION = 2


class ScoreItem(BaseModel):
    """One answer to score."""

    model_config = ConfigDict(extra="forbid")

    prompt_ids: list[int] | None = Field(None, description="Exact prompt ids.")
    response_ids: list[int] | None = Field(None, description="Exact response ids.")
    messages: list[dict[str, Any]] | str | None = Field(
        None, description="Chat messages (or one user message as a string).")
    question: str | None = Field(
        None, description="A question asked in the model's own prompt format (a QAPrompt).")
    answer: str | None = Field(None, description="The answer text.")
    served: dict[str, Any] | None = Field(
        None, description="A model server's tokens for the answer (ServedAnswer.to_dict()).")

    @model_validator(mode="after")
    def _one_shape(self) -> ScoreItem:
        ids = self.prompt_ids is not None or self.response_ids is not None
        prompt = self.messages is not None or self.question is not None
        text = prompt or self.answer is not None
        if ids and text:
            raise ValueError("give prompt_ids/response_ids or messages (or question) and "
                             "answer, not both")
        if ids and (self.prompt_ids is None or self.response_ids is None):
            raise ValueError("exact ids need both prompt_ids and response_ids")
        if self.messages is not None and self.question is not None:
            raise ValueError("give messages or question, not both")
        if not ids and (not prompt or self.answer is None):
            raise ValueError("an item needs prompt_ids and response_ids, or messages (or "
                             "question) and answer")
        if self.served is not None and ids:
            raise ValueError("served tokens go with messages (or question) and answer")
        return self

    @property
    def prompt(self) -> Prompt:
        """The prompt of a text item, as the scorer in process takes it."""
        if self.question is not None:
            return qa_prompt(self.question)
        if self.messages is None:
            raise ValueError("an item of exact ids has no prompt")
        return self.messages

    @property
    def kind(self) -> Literal["ids", "text", "served"]:
        if self.prompt_ids is not None:
            return "ids"
        return "served" if self.served is not None else "text"


class ScoreRequest(BaseModel):
    """A batch of answers to score."""

    model_config = ConfigDict(extra="forbid")

    items: list[ScoreItem] = Field(min_length=1, max_length=MAX_ITEMS)
    method: str | None = Field(None, description="The score to headline (default: the "
                                                 "scorer's method).")


def result_to_dict(outcome: UncertaintyScore | BaseException) -> dict[str, Any]:
    """One item's result: ``{"score": ...}`` (the whole score) or ``{"error": ...}``."""
    if isinstance(outcome, BaseException):
        return {"error": error_to_dict(outcome)}
    return {"score": outcome.to_dict()}


def score_from_dict(data: dict[str, Any]) -> UncertaintyScore:
    """The score a service sent, every field of it; tuples come back as tuples."""
    known = {f.name: f for f in dataclasses.fields(UncertaintyScore)}
    values: dict[str, Any] = {}
    for name, value in data.items():
        spec = known.get(name)
        if spec is None:
            continue  # a field of a newer service: this client cannot hold it
        if isinstance(value, list) and str(spec.type).startswith("tuple"):
            value = tuple(value)
        values[name] = value
    return UncertaintyScore(**values)


def error_to_dict(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_dict(data: dict[str, Any]) -> ScoringError:
    """The typed scoring error a service reported (``RemoteScoringError`` for others)."""
    kind = getattr(errors, str(data.get("type", "")), None)
    message = str(data.get("message", "the scoring service failed"))
    if isinstance(kind, type) and issubclass(kind, ScoringError) and \
            kind is not RemoteScoringError:
        return kind(message)
    return RemoteScoringError(f"{data.get('type', 'error')}: {message}")
