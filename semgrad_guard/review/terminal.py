"""Text from models and applications, made safe to print on a reviewer's terminal.

A terminal interprets control characters: ESC starts sequences that clear the screen,
move the cursor or (OSC 52) write the clipboard, BEL rings, an 8-bit CSI does what
ESC [ does, and bidirectional overrides reorder what is shown. Everything printed from
a case goes through :func:`shown`, which turns those characters into visible escapes.

>>> shown("ok\\x1b]52;c;cHduZWQ=\\x07")
'ok\\\\x1b]52;c;cHduZWQ=\\\\x07'
>>> shown("two\\nlines", lines=True)
'two\\nlines'
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

# Control (Cc), format (Cf: bidi overrides, zero-width), line/paragraph separators and
# lone surrogates; newline and tab are kept where text is shown on several lines.
_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")


def _unsafe(char: str, lines: bool) -> bool:
    if lines and char in "\n\t":
        return False
    return unicodedata.category(char) in _CATEGORIES


def shown(text: str, *, lines: bool = False) -> str:
    """``text`` with every character a terminal would act on written as an escape."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(char.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if _unsafe(char, lines) else char for char in text)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
                          "\ufff9-\ufffb]")


def json_for_terminal(data: Any) -> str:
    """Indented JSON with non-ASCII text kept readable and no raw control characters.

    ``json.dumps`` already escapes C0 controls; DEL, C1 controls and bidi/format
    characters are escaped here too, as ``\\uXXXX`` (the data itself is unchanged).
    """
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
