"""The package README's chat-model and traces snippets run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


@pytest.mark.real_model
def test_the_chat_model_snippet_runs_as_written(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(section_code("A LangChain chat model like the others"))
    namespace: dict[str, Any] = runpy.run_path(str(snippet), run_name="readme_snippet")
    assert namespace["verdict"].answer in ("yes", "no")
    assert namespace["score"]["direction"] == "higher_is_more_uncertain"
    assert namespace["call"]["name"] == "get_weather" and set(namespace["call"]["args"]) == {
        "city"}
    assert namespace["n_prompt"] == len(namespace["chat"].model.prompt_ids(
        [{"role": "user", "content": "Hi"}]))


def test_the_traces_snippet_shows_what_it_says() -> None:
    *lines, expression, comment = section_code("Decisions in traces").strip().splitlines()
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "README.md", "exec"), namespace)
    assert repr(eval(expression, namespace)) == comment.lstrip("# ")
    assert namespace["guarded"].guard.scorer.remaining == 0
