"""The README's snippet on testing a guarded chain runs as written and says what it does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_scripted_scorer_snippet_runs() -> None:
    text = README.read_text()
    section = text[text.index("## Testing your guarded chains"):
                   text.index("## Escalation to a human")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    *lines, expression, comment = code.strip().splitlines()
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "README.md", "exec"), namespace)
    actions = eval(expression, namespace)
    assert repr(actions) == comment.lstrip("# ").split(":")[0]
    assert namespace["guard"].scorer.remaining == 0
