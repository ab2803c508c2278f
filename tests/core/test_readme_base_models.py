"""The README's snippet on base models runs as written on the real default model, and
its commented results are what it prints."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.real_model


def test_the_base_model_snippet_runs_and_says_what_it_gives() -> None:
    text = README.read_text()
    section = text[text.index("### Base models"):text.index("### Command line")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    lines = code.splitlines()
    namespace: dict[str, Any] = {}
    checked = 0
    for statement in ast.parse(code).body:
        source = ast.get_source_segment(code, statement)
        if isinstance(statement, ast.Expr):
            comment = lines[statement.end_lineno - 1].split("#", 1)[1].strip()  # type: ignore[operator]
            assert repr(eval(source, namespace)) == comment, source  # type: ignore[arg-type]
            checked += 1
        else:
            exec(compile(source, "README.md", "exec"), namespace)  # type: ignore[arg-type]
    assert checked == 2
    assert namespace["lm"].prompt_format.plain_examples == (
        ("Who wrote Hamlet?", "William Shakespeare"),)
