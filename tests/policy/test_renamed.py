"""Renamed names keep their old names for one release, each with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest

from semgrad_guard.policy import GuardDecision, PolicyConfig, Rule

POLICY = {"version": 1, "default": {"threshold": {"max_score": 0.5}},
          "chains": [{"name": "rag", "threshold": {"max_score": 0.2}}]}


def _decision(**name: str) -> GuardDecision:
    return GuardDecision(action="pass", answer="Paris", passed=True, score=None,
                         error_probability=None, attempts=[], case_id=None,
                         reason="score under threshold", **name)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", ["semgrad_guard.policy", "semgrad_guard.policy.config"])
def test_chain_policy_is_rule(module: str) -> None:
    loaded = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match="ChainPolicy is deprecated.*Rule"):
        assert loaded.ChainPolicy is Rule
    with pytest.warns(DeprecationWarning):
        from semgrad_guard.policy import ChainPolicy  # noqa: F401
    with pytest.raises(AttributeError):
        loaded.NoSuchName  # noqa: B018


def test_decision_chain_is_its_rule() -> None:
    decision = _decision(rule="rag")
    with pytest.warns(DeprecationWarning, match=r"GuardDecision\.chain is deprecated"):
        assert decision.chain == "rag"
    with pytest.warns(DeprecationWarning, match=r"GuardDecision\(chain=\.\.\.\)"):
        old = _decision(chain="rag")
    assert old == decision
    assert decision.to_dict()["rule"] == decision.to_dict()["chain"] == "rag"


def test_policy_chain_is_policy_rule() -> None:
    policy = PolicyConfig.from_dict(POLICY)
    with pytest.warns(DeprecationWarning, match=r"PolicyConfig\.chain\(\) is deprecated"):
        assert policy.chain("rag") is policy.rule("rag")
    assert policy.rule("default") is policy.default
