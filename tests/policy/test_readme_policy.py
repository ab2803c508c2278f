"""The README's policy-file snippet runs as written, and what it says holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from semgrad_guard.errors import ConfigError
from semgrad_guard.policy import load_policy

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_custom_handler_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text()
    section = text[text.index("## Policies"):text.index("## LangChain")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["policy"].default.actions[0].function is namespace["route"]
    (tmp_path / "custom.yaml").write_text(
        (tmp_path / "custom.yaml").read_text().replace("handler: route", "handler: os:system"))
    with pytest.raises(ConfigError, match="not allowed"):
        load_policy("custom.yaml", handlers={"route": namespace["route"]})
    for number in ("at most 1 MB", "at most 50 deep", "at most 100 aliases",
                   "at most 100,000 values"):
        assert number in " ".join(section.split())
    from semgrad_guard.policy import policy_yaml

    assert (policy_yaml.MAX_BYTES, policy_yaml.MAX_DEPTH, policy_yaml.MAX_ALIASES,
            policy_yaml.MAX_NODES) == (1_000_000, 50, 100, 100_000)
