"""The LangChain examples run offline on the default model and end as documented."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.real_model

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rag_example_passes_the_answerable_and_abstains_after_retries(
        default_lm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    example = _load("langchain_rag")
    decisions = example.main(default_lm)
    answered, unanswerable = decisions
    threshold = example.POLICY["chains"][0]["threshold"]["max_error_probability"]
    assert answered.action == "pass" and "20 cents" in str(answered.answer)
    assert [r.attempt.k for r in answered.attempts] == [None]
    assert answered.score.method == "learned" and not answered.score.out_of_domain
    assert answered.value < threshold - 0.05  # the documented margin
    assert unanswerable.action == "abstain"
    assert [r.attempt.k for r in unanswerable.attempts] == [None, 6, 12]
    assert all(r.value > threshold + 0.05 for r in unanswerable.attempts)
    assert unanswerable.answer == "I can't answer that from the library's documents."
    out = capsys.readouterr().out
    assert "PASS" in out and "ABSTAIN" in out and "2 decisions in the audit trail" in out


def test_agent_example_allows_blocks_and_escalates(default_lm: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    example = _load("langchain_agent")
    allowed, blocked, escalated = example.main(default_lm)
    threshold = example.POLICY["default"]["threshold"]["max_error_probability"]
    assert example.POLICY["default"]["score"] == "auto"
    assert (allowed["action"], allowed["status"]) == ("pass", "success")
    assert allowed["value"] < threshold - 0.005  # the documented margins
    assert allowed["result"] == "The Hobbit is renewed until 12 June."
    assert (blocked["action"], blocked["status"]) == ("abstain", "error")
    assert blocked["value"] > threshold + 0.01
    assert "Ask the user which book they mean." in blocked["result"]
    assert escalated["action"] == "escalate" and escalated["status"] == "success"
    assert escalated["value"] > threshold + 0.05
    assert "sam@harborlane.org" in escalated["result"]
    assert "3 decisions in the audit trail" in capsys.readouterr().out
