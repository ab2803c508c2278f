"""The integration package: namespace layout, pinned public API, package metadata."""

from __future__ import annotations

import doctest
import tomllib
from pathlib import Path

import llama_index.core
import llama_index.llms.semgrad_guard as package
from llama_index.llms.semgrad_guard import scores

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_API = [
    "DECISION_KEY",
    "SCORE_ERROR_KEY",
    "SCORE_KEY",
    "UNCERTAIN_KEY",
    "GuardDecisionEvent",
    "GuardedChatEngine",
    "GuardedQueryEngine",
    "LLMCallScore",
    "OfflineMiniLMEmbedding",
    "ScoreSpanHandler",
    "ScoredCompletion",
    "SemGradEvaluator",
    "SemGradLLM",
    "UncertaintyEventHandler",
    "answer_prompt",
    "check_llm",
    "score_from_response",
    "score_metadata",
]


def test_public_api_is_pinned() -> None:
    assert sorted(package.__all__) == sorted(PUBLIC_API)
    for name in PUBLIC_API:
        assert getattr(package, name) is not None


def test_namespace_package_sits_beside_llama_index_core() -> None:
    """``llama_index`` and ``llama_index.llms`` are namespace packages (no __init__.py),
    so the integration and llama-index-core share the ``llama_index`` namespace."""
    assert Path(package.__file__).parent == ROOT / "llama_index" / "llms" / "semgrad_guard"
    assert not (ROOT / "llama_index" / "__init__.py").exists()
    assert not (ROOT / "llama_index" / "llms" / "__init__.py").exists()
    assert (ROOT / "llama_index" / "llms" / "semgrad_guard" / "py.typed").exists()
    assert llama_index.core.__file__ is not None


def test_distribution_follows_the_llama_index_convention() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["name"] == "llama-index-llms-semgrad-guard"
    assert meta["tool"]["llamahub"]["import_path"] == "llama_index.llms.semgrad_guard"
    assert any(d.startswith("llama-index-core") for d in meta["project"]["dependencies"])
    assert set(meta["tool"]["llamahub"]["class_authors"]) <= set(PUBLIC_API)


def test_docstring_examples_that_need_no_model_run() -> None:
    failed, attempted = doctest.testmod(scores)
    assert attempted >= 2 and failed == 0
