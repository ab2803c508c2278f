"""A policy file cannot exhaust memory, crash the loader untyped, or run code."""

from __future__ import annotations

import multiprocessing
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from semgrad_guard.errors import ConfigError
from semgrad_guard.policy import ActionContext, GuardDecision, PolicyConfig, load_policy

FORK = multiprocessing.get_context("fork")

# 565 bytes: nine aliases of nine aliases ... expand to 9**9 (387 million) strings.
ALIAS_BOMB = """version: 1
default:
  threshold: {max_score: 0.1}
  score: &i [&h [&g [&f [&e [&d [&c [&b [&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"],*a,*a,*a,*a,*a,*a,*a,*a],*b,*b,*b,*b,*b,*b,*b,*b],*c,*c,*c,*c,*c,*c,*c,*c],*d,*d,*d,*d,*d,*d,*d,*d],*e,*e,*e,*e,*e,*e,*e,*e],*f,*f,*f,*f,*f,*f,*f,*f],*g,*g,*g,*g,*g,*g,*g,*g],*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _load_with_bounded_memory(path: str, out: Any) -> None:
    # At most 1 GiB more address space than this (forked, already imported) process has.
    pages = int(open("/proc/self/statm").read().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    try:
        load_policy(path)
        out.send(("loaded", ""))
    except ConfigError as exc:
        out.send(("ConfigError", str(exc)))
    except BaseException as exc:
        out.send((type(exc).__name__, str(exc)[:500]))


def test_a_565_byte_alias_bomb_fails_fast_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_load_with_bounded_memory, args=(str(path), sender))
    child.start()
    try:
        assert receiver.poll(60), "loading the alias bomb did not finish in 60 s"
        kind, message = receiver.recv()
    finally:
        child.kill()
        child.join()
    assert kind == "ConfigError", (kind, message[:500])
    assert "alias" in message.replace(str(path), "") and len(message) < 2000


def test_anchors_for_sharing_still_work(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    path.write_text("version: 1\n"
                    "default:\n  threshold: {max_score: 0.1}\n"
                    "  actions: &escalate [{type: escalate, queue: 'sqlite:///r.db'}]\n"
                    "chains:\n  - {name: a, actions: *escalate}\n"
                    "  - {name: b, actions: *escalate}\n")
    policy = load_policy(path)
    assert [rule.actions[0].type for rule in policy.chains] == ["escalate", "escalate"]


@pytest.mark.parametrize(("content", "fragment"), [
    (b"version: 1\ndefault: {threshold: {max_score: 0.1}}\n# caf\xe9\n", "not UTF-8"),
    (b"version: 1\nx: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested deeper than"),
    (b"version: 1\nx: " + b"{a: " * 20_000 + b"1" + b"}" * 20_000 + b"\n",
     "nested deeper than"),
    (b"version: 1\ndefault: {threshold: {max_score: 0.1}}\n"
     b"default: {threshold: {max_score: 0.9}}\n", "duplicate key 'default'"),
    (b"version: 1\ndefault: {threshold: {max_score: 0.1, max_score: 5}}\n",
     "duplicate key 'max_score'"),
    (b"version: 1\n# padding\n" + b"#" * 2_000_000 + b"\n", "larger than"),
    (b"\x00\x01binary", "not valid YAML"),
    (b"\xff\xfe\x00v\x00", "not UTF-8"),
])
def test_every_bad_file_is_a_config_error(tmp_path: Path, content: bytes,
                                          fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_policy(path)
    assert str(path) in str(caught.value) and len(str(caught.value)) < 2000


@pytest.mark.parametrize("threshold", [".nan", ".inf", "-.inf", "-0.5"])
def test_thresholds_must_be_finite_and_not_negative(tmp_path: Path, threshold: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\ndefault: {{threshold: {{max_score: {threshold}}}}}\n")
    with pytest.raises(ConfigError, match="max_score"):
        load_policy(path)


@pytest.mark.parametrize("rule", [
    {"threshold": {"max_error_probability": 0.2, "calibration": {
        "score": "semgrad", "coef": float("nan"), "intercept": 0.0}}},
    {"threshold": {"max_score": 0.1}, "actions": [
        {"type": "retry_with_retrieval", "base_k": 4, "k_multiplier": float("inf")}]},
])
def test_other_numbers_must_be_finite(rule: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="finite"):
        PolicyConfig.from_dict({"version": 1, "default": rule})


def test_error_messages_show_values_truncated() -> None:
    with pytest.raises(ConfigError) as caught:
        PolicyConfig.from_dict({"version": 1, "default": {
            "threshold": {"max_score": "x" * 100_000}, "score": ["y" * 1000] * 1000}})
    message = str(caught.value)
    assert len(message) < 2000 and "..." in message


def fallback(context: ActionContext) -> GuardDecision | None:
    return None


def test_a_policy_file_cannot_name_arbitrary_code(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    for handler in ("os:system", "subprocess:run", "builtins:eval", f"{__name__}:fallback"):
        path.write_text(f"version: 1\ndefault:\n  threshold: {{max_score: 0.1}}\n"
                        f"  actions: [{{type: custom, handler: '{handler}'}}]\n")
        with pytest.raises(ConfigError, match="not allowed"):
            load_policy(path)
    # The application names the handlers a file may use: by name, or by module.
    path.write_text("version: 1\ndefault:\n  threshold: {max_score: 0.1}\n"
                    "  actions: [{type: custom, handler: fallback}]\n")
    assert load_policy(path, handlers={"fallback": fallback}
                       ).default.actions[0].function is fallback  # type: ignore[union-attr]
    path.write_text(f"version: 1\ndefault:\n  threshold: {{max_score: 0.1}}\n"
                    f"  actions: [{{type: custom, handler: '{__name__}:fallback'}}]\n")
    policy = load_policy(path, handler_modules=["tests.policy"])
    assert policy.default.actions[0].function is fallback  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="not allowed"):  # a prefix is not a parent module
        load_policy(path, handler_modules=["tests.pol"])


def test_a_policy_only_edited_is_validated_without_resolving_handlers() -> None:
    data = {"version": 1, "default": {"threshold": {"max_score": 0.1},
                                      "actions": [{"type": "custom", "handler": "app:route"}]}}
    policy = PolicyConfig.from_dict(data, check_handlers=False)
    with pytest.raises(ConfigError, match="not resolved"):
        policy.default.actions[0].function  # type: ignore[union-attr]  # noqa: B018


def test_a_guard_from_a_policy_file_or_dict_takes_the_applications_handlers(
        tmp_path: Path) -> None:
    from semgrad_guard import Guard

    data = {"version": 1, "default": {"threshold": {"max_score": 0.1},
                                      "actions": [{"type": "custom", "handler": "fallback"}]}}
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefault:\n  threshold: {max_score: 0.1}\n"
                    "  actions: [{type: custom, handler: fallback}]\n")
    for policy in (data, path):
        with pytest.raises(ConfigError, match="not allowed"):
            Guard.from_policy(policy)
        guard = Guard.from_policy(policy, handlers={"fallback": fallback})
        assert guard.policy.default.actions[0].function is fallback  # type: ignore[union-attr]
