"""Personal data kept out of files: fields blanked and patterns masked before writing.

The review queue and the audit trail both take a ``Redaction``. It is applied before
anything reaches the disk, so what it removes was never stored.

>>> redact = Redaction(fields=("metadata.email",), patterns=(r"\\b\\d{4}-\\d{4}\\b",))
>>> redact.apply({"question": "card 1234-5678?", "metadata": {"email": "a@b.c", "n": 1}})
{'question': 'card [redacted]?', 'metadata': {'email': '[redacted]', 'n': 1}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Redaction:
    """What to remove before a record is written.

    ``fields`` names whole fields to blank (``"context"``, ``"metadata"``) or one
    metadata key (``"metadata.email"``); a blanked text becomes ``replacement``, each
    document of a list too, each value of a mapping too. ``patterns`` are regular
    expressions masked with ``replacement`` in every text value that is kept.
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
        """A copy of ``record`` with the fields blanked and the patterns masked."""
        data = {name: self._masked(value) for name, value in record.items()}
        for name in self.fields:
            top, _, key = name.partition(".")
            if top not in data:
                continue
            if key:
                if isinstance(data[top], dict) and key in data[top]:
                    data[top] = {**data[top], key: self._blank(data[top][key])}
            else:
                data[top] = self._blank(data[top])
        return data

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
