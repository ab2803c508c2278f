"""examples/llamaindex_rag.py on the real default model: the answerable question passes,
the unanswerable one is retried with wider retrieval and escalated."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from semgrad_guard import LocalModel

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "llamaindex_rag.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llamaindex_rag_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.real_model
def test_rag_example_passes_the_answerable_and_escalates_the_unanswerable(
        default_lm: LocalModel, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Any attempt to reach the network (tokenizer data, model hub) fails loudly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    example = load_example()
    rule = yaml.safe_load(example.POLICY_YAML)["chains"][0]
    threshold = rule["threshold"]["max_error_probability"]
    assert rule["score"] == "auto" and threshold == 0.6  # the README's, see the docstring

    answerable, unanswerable = example.main([], llm=example.example_llm(default_lm))

    passed = answerable.metadata["guard_decision"]
    assert passed["action"] == "pass" and passed["passed"] is True
    assert passed["rule"] == "rag" and len(passed["attempts"]) == 1
    assert "11 kilograms" in answerable.response
    assert answerable.metadata["semgrad"]["retokenized"] is False
    assert passed["attempts"][0]["value"] < threshold - 0.1  # the documented margins
    assert answerable.metadata["semgrad"]["out_of_domain"] is False

    escalated = unanswerable.metadata["guard_decision"]
    assert escalated["action"] == "escalate" and escalated["case_id"]
    assert [a["k"] for a in escalated["attempts"]] == [None, 4]
    assert [len(a["context"]) for a in escalated["attempts"]] == [2, 4]
    assert all(a["value"] > threshold + 0.08 for a in escalated["attempts"])
    assert escalated["attempts"][1]["query"].endswith("Answer only from the passages.")
    assert unanswerable.response.startswith("A support specialist")

    printed = capsys.readouterr().out
    assert "decision: PASS" in printed and "decision: ESCALATE" in printed
    assert "LLM calls seen by the event handler: 3" in printed
