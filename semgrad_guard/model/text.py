"""Text on its way to the tokenizer: a ``str`` of valid Unicode, or a typed error that
names the problem (the tokenizer itself raises a bare ``TypeError`` for both)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidTextError


def tokenizable(text: Any, what: str) -> str:
    """``text`` unchanged when the tokenizer can take it; else :class:`InvalidTextError`.

    >>> tokenizable("Paris", "the answer")
    'Paris'
    >>> tokenizable("Par\\ud800is", "the answer")
    Traceback (most recent call last):
    ...
    semgrad_guard.errors.InvalidTextError: the answer holds a lone surrogate ('\\ud800') at position 3: ...
    """
    if not isinstance(text, str):
        raise InvalidTextError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTextError(
            f"{what} holds a lone surrogate ({text[exc.start]!r}) at position {exc.start}: "
            f"text must be valid Unicode (decode bytes with errors='replace', or remove the "
            f"surrogate)") from None
    return text
