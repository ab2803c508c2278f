"""Personal data kept out of files: fields blanked and patterns masked before writing.

The review queue and the audit trail both take a ``Redaction``. It is applied before
anything reaches the disk, so what it removes was never stored. A field is blanked
wherever the record holds it: the question in each recorded attempt's query and in the
prompt too, the answer in each attempt's answer, the retrieved context in each
attempt's context.

>>> redact = Redaction(fields=("metadata.email",), patterns=(r"\\b\\d{4}-\\d{4}\\b",))
>>> redact.apply({"question": "card 1234-5678?", "metadata": {"email": "a@b.c", "n": 1}})
{'question': 'card [redacted]?', 'metadata': {'email': '[redacted]', 'n': 1}}
>>> Redaction(fields=("question",)).apply({"question": "Is 4711 mine?",
...     "attempts": [{"number": 0, "query": "Is 4711 mine?", "answer": "Yes."}]})
{'question': '[redacted]', 'attempts': [{'number': 0, 'query': '[redacted]', 'answer': 'Yes.'}]}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

#: What naming a field blanks besides the field itself: the answer the rule chose is an
#: answer too.
_ALSO_BLANKED = {"answer": ("chosen_answer",)}

#: The keys of a recorded attempt (``AttemptRecord.to_dict()``) each field name blanks:
#: an attempt's query is the question (or its rewrite), and its prompt holds it.
ATTEMPT_KEYS = {"question": ("query", "prompt"), "answer": ("answer",),
                "context": ("context",), "prompt": ("prompt",)}


@dataclass(frozen=True)
class Redaction:
    """What to remove before a record is written.

    ``fields`` names whole fields to blank (``"context"``, ``"metadata"``) or one
    metadata key (``"metadata.email"``); a blanked text becomes ``replacement``, each
    document of a list too, each value of a mapping too. A field is blanked everywhere
    the record holds it: ``question`` in each attempt's query and in the prompt (a
    prompt is blanked in its own shape, its messages' roles kept), ``answer`` in the
    chosen answer and each attempt's answer, ``context`` and ``prompt`` in each
    attempt's. ``patterns`` are regular expressions masked with ``replacement`` in every
    text value that is kept, the attempts' included.
    """

    fields: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    replacement: str = "[redacted]"
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False,
                                                   compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.fields, str) or isinstance(self.patterns, str):
            raise ConfigError("Redaction fields and patterns are lists of strings, not one "
                              "string")
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "patterns", tuple(self.patterns))
        compiled = []
        for pattern in self.patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ConfigError(f"redaction pattern {pattern!r}: {exc}") from exc
        object.__setattr__(self, "_compiled", tuple(compiled))

    def check(self, allowed: Iterable[str]) -> Redaction:
        """Raise ``ConfigError`` for a field name this store does not have."""
        known = set(allowed)
        for name in self.fields:
            top = name.split(".", 1)[0]
            if top not in known or ("." in name and top != "metadata"):
                raise ConfigError(f"redaction field {name!r}: expected one of "
                                  f"{', '.join(sorted(known))}, or metadata.<key>")
        return self

    def text(self, value: str) -> str:
        """``value`` with every pattern masked."""
        for pattern in self._compiled:
            value = pattern.sub(self.replacement, value)
        return value

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with the fields blanked and the patterns masked; its
        ``attempts`` (a list of recorded attempts) as :meth:`attempts` gives them, its
        ``prompt`` as :meth:`prompt` does."""
        data: dict[str, Any] = {
            name: self.attempts(value) if name == "attempts" and isinstance(value, list)
            else self.prompt(value) if name == "prompt" else self._masked(value)
            for name, value in record.items()}
        for name in self.fields:
            top, _, key = name.partition(".")
            if key:
                if isinstance(data.get(top), dict) and key in data[top]:
                    data[top] = {**data[top], key: self._blank(data[top][key])}
                continue
            for stored in (top, *_ALSO_BLANKED.get(top, ())):
                if stored in data and stored != "prompt":  # the prompt keeps its shape
                    data[stored] = self._blank(data[stored])
        return data

    def attempts(self, attempts: list[Any]) -> list[Any]:
        """Recorded attempts (``AttemptRecord.to_dict()``) with the patterns masked and,
        for each field named, the keys that hold it blanked (:data:`ATTEMPT_KEYS`)."""
        keys = {key for name in self.fields for key in ATTEMPT_KEYS.get(name, ())}
        return [{key: self.prompt(value) if key == "prompt"
                 else self._blank(value) if key in keys else self._masked(value)
                 for key, value in attempt.items()}
                if isinstance(attempt, dict) else self._masked(attempt)
                for attempt in attempts]

    def prompt(self, prompt: Any) -> Any:
        """A prompt as stored (a text, ``{"question": ...}`` or chat messages) with its
        texts masked (a message's role kept), or blanked in its own shape when the
        question or the prompt is blanked."""
        if prompt is None:
            return None
        blank = any(name in ("question", "prompt") for name in self.fields)
        if isinstance(prompt, str):
            return self.replacement if blank else self.text(prompt)
        if isinstance(prompt, dict):
            return {"question": self.replacement if blank
                    else self._masked(prompt.get("question"))}
        if not isinstance(prompt, list | tuple):
            return self.replacement if blank else self._masked(prompt)
        return [{key: value if key == "role" else
                 self.replacement if blank and key == "content" else
                 self._masked(value) for key, value in m.items()}
                if isinstance(m, dict) else self.replacement if blank else self._masked(m)
                for m in prompt]

    def _blank(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [self.replacement for _ in value]
        if isinstance(value, dict):
            return {key: self.replacement for key in value}
        return self.replacement

    def _masked(self, value: Any) -> Any:
        if not self._compiled:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self._masked(item) for item in value]
        if isinstance(value, dict):
            return {key: self._masked(item) for key, item in value.items()}
        return value
