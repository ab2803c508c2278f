"""The policy file: loading, inheritance, matching and the error messages of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from semgrad_guard.errors import ConfigError
from semgrad_guard.policy import (
    EscalateAction,
    PolicyConfig,
    RetryWithRetrievalAction,
    load_policy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def policy(**default: object) -> dict[str, object]:
    return {"version": 1, "default": {"threshold": {"max_score": 0.5}, **default}}


def test_the_example_file_loads() -> None:
    p = load_policy(EXAMPLE)
    assert p.source == str(EXAMPLE)
    rag = p.rule("rag")
    assert isinstance(rag.actions[0], RetryWithRetrievalAction)
    assert isinstance(rag.actions[1], EscalateAction)
    assert rag.threshold.max_error_probability is not None
    assert rag.threshold.calibration is not None and rag.threshold.calibration.transform == "log"
    # keys the chain leaves out come from the default rule
    assert rag.on_score_failure == "fail_closed" and rag.score == "semgrad"
    tools = p.rule("agent-tools")
    assert tools.score == "auto" and tools.threshold.max_error_probability == 0.5


def test_rules_match_by_run_name_tags_and_metadata_first_match_wins() -> None:
    p = PolicyConfig.from_dict({**policy(), "chains": [
        {"name": "support", "match": {"tags": ["faq", "help"], "metadata": {"team": "support"}}},
        {"name": "rag", "match": {"run_name": "rag-*"}},
        {"name": "faq", "match": {"tags": "faq"}},
        {"name": "plain"},  # no match: run_name == name
    ]})
    assert p.rule_for(run_name="rag-v2").name == "rag"
    assert p.rule_for(run_name="rag-v2", tags=["faq"], metadata={"team": "support"}).name \
        == "support"
    assert p.rule_for(tags=["faq"], metadata={"team": "sales"}).name == "faq"
    assert p.rule_for(run_name="plain").name == "plain"
    assert p.rule_for(run_name="other", tags=["x"]).name == "default"
    assert p.rule_for().name == "default"


def test_a_chain_inherits_the_default_rule_but_not_its_match() -> None:
    p = PolicyConfig.from_dict({**policy(score="nll", on_score_failure="raise"),
                                "chains": [{"name": "rag", "score": "hybridgrad"}]})
    rag = p.rule("rag")
    assert (rag.score, rag.on_score_failure, rag.threshold.max_score) == \
        ("hybridgrad", "raise", 0.5)
    assert rag.match is None


def test_retry_attempts_follow_the_k_schedule_or_the_multiplier() -> None:
    p = PolicyConfig.from_dict(policy(actions=[
        {"type": "retry_with_retrieval", "k_schedule": [5, 9, 20]},
        {"type": "retry_with_retrieval", "k_multiplier": 1.5, "retrievers": ["a", "b"],
         "rewrite_query": "{question} (try {attempt}, not {previous_answer})"}]))
    first, second = p.default.actions
    assert isinstance(first, RetryWithRetrievalAction)
    assert isinstance(second, RetryWithRetrievalAction)
    assert first.attempts == 3
    assert second.attempts == 2
    assert p.default.retry_budget == 5
    assert first.attempt(2, 2, "q", None, chain_k=None).k == 9
    a = second.attempt(1, 4, "q", "x", chain_k=4)
    assert (a.k, a.query, a.retriever) == (6, "q (try 4, not x)", "a")
    assert second.attempt(2, 5, "q", "x", chain_k=4).k == 9
    assert second.attempt(2, 5, "q", "x", chain_k=None).k is None
    assert second.attempt(3, 6, "q", "x", chain_k=None).retriever == "b"  # the last repeats


def test_a_bad_file_names_the_file_the_key_the_value_and_the_allowed_values(
        tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\n"
                    "default:\n"
                    "  threshold: {max_score: 0.1}\n"
                    "  on_score_failure: fail_sometimes\n"
                    "chains:\n"
                    "  - name: rag\n"
                    "    actions:\n"
                    "      - type: retry_with_retrieval\n"
                    "        atempts: 3\n"
                    "      - type: abstian\n")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert "default.on_score_failure: got 'fail_sometimes'; allowed: 'fail_closed', " \
           "'fail_open' or 'raise'" in message
    assert "chains.0.actions.0.atempts: unknown key; allowed keys: type, attempts, " \
           "k_schedule" in message
    assert "chains.0.actions.1.type: got 'abstian'; allowed: abstain, flag, " \
           "retry_with_retrieval, escalate, custom" in message


@pytest.mark.parametrize(("data", "fragment"), [
    ({"version": 2, "default": {"threshold": {"max_score": 1}}}, "version: got 2; allowed: 1"),
    ({"version": 1}, "default: required key is missing"),
    ({"version": 1, "default": {"threshold": {"max_score": 1}}, "extra": 1},
     "extra: unknown key; allowed keys: version, default, chains"),
    (policy(threshold={}), "default.threshold: give exactly one of max_score and "
                           "max_error_probability"),
    (policy(threshold={"max_error_probability": 0.2}), "needs a fitted 'calibration'"),
    (policy(threshold={"max_error_probability": 1.5, "calibration": {
        "score": "semgrad", "coef": 1, "intercept": 0}}), "max_error_probability: got 1.5"),
    (policy(score="entropy"), "default.score: got 'entropy'; allowed: 'semgrad', "
                              "'hybridgrad'"),
    (policy(actions=["abstain", "escalate"]), "action 0 (abstain) ends the walk"),
    (policy(actions=[]), "default.actions"),
    (policy(actions=[{"type": "retry_with_retrieval", "attempts": 11}]),
     "attempts: got 11: Input should be less than or equal to 10"),
    (policy(actions=[{"type": "retry_with_retrieval", "attempts": 6}] * 2),
     "the retry actions add up to 12 attempts; at most 10"),
    (policy(actions=[{"type": "retry_with_retrieval", "attempts": 3, "k_schedule": [8]}]),
     "k_schedule has 1 depths for 3 attempts"),
    (policy(actions=[{"type": "retry_with_retrieval", "k_schedule": [8], "base_k": 4}]),
     "give k_schedule or base_k"),
    (policy(actions=[{"type": "retry_with_retrieval", "rewrite_query": "{query}"}]),
     "unknown placeholder {query}; allowed: {attempt}, {previous_answer}, {question}"),
    (policy(actions=[{"type": "custom", "handler": "no_such_module_x:f"}]),
     "handler 'no_such_module_x:f' is not allowed"),
    (policy(actions=[{"type": "custom", "handler": "os.path"}]), "'os.path' is not allowed"),
    (policy(actions=[{"kind": "abstain"}]), "an action needs a 'type'"),
    ({**policy(), "chains": [{"name": "default"}]}, "'default' is used twice"),
    ({**policy(), "chains": [{"name": "a", "match": {}}]}, "a match needs at least one of"),
])
def test_invalid_policies(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyConfig.from_dict(data, source="p.yaml")
    assert fragment in str(info.value)
    assert "p.yaml" in str(info.value)


def test_allowed_handler_modules_are_imported_at_load() -> None:
    data = policy(actions=[{"type": "custom", "handler": "no_such_module_x:f"}])
    with pytest.raises(ConfigError, match="cannot import handler 'no_such_module_x:f'"):
        PolicyConfig.from_dict(data, handler_modules=["no_such_module_x"])


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("version: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_policy(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_policy(tmp_path / "list.yaml")


def test_unknown_chain_name() -> None:
    with pytest.raises(ConfigError, match="no rule named 'x'; known: default"):
        PolicyConfig.from_dict(policy()).rule("x")


def test_a_thresholds_limit_is_the_number_it_holds_values_to() -> None:
    from semgrad_guard.policy.config import Threshold

    assert Threshold(max_score=0.2).limit == 0.2
    assert Threshold(max_error_probability=0.4).limit == 0.4
