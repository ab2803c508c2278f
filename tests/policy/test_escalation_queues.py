"""Review queues named in a policy file: checked when the file is read and when the
guard is built, reachable from the guard, and what a retried case carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from semgrad_guard.errors import ConfigError
from semgrad_guard.policy import Guard, PolicyConfig, load_policy
from semgrad_guard.review import open_review_queue
from semgrad_guard.testing import ScriptedScorer


def _policy_file(tmp_path: Path, queue: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\ndefault:\n  threshold: {max_score: 0.5}\n"
                    f"  actions: [{{type: escalate, queue: \"{queue}\"}}]\n")
    return path


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "mysql://db/review", "sqlite://"])
def test_an_unsupported_queue_url_fails_when_the_file_is_read(tmp_path: Path, url: str) -> None:
    path = _policy_file(tmp_path, url)
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message and "default.actions.0" in message and url in message


def test_a_queue_in_a_missing_folder_fails_when_the_guard_is_built(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/not-created/review.db"
    policy = load_policy(_policy_file(tmp_path, url))  # the file itself is fine
    with pytest.raises(ConfigError, match="not-created.*does not exist") as caught:
        Guard(policy)
    assert url in str(caught.value)
    assert not (tmp_path / "not-created").exists()


def test_the_queue_named_in_the_file_is_the_guards_review_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    with Guard(load_policy(_policy_file(tmp_path, url)), scorer=ScriptedScorer([0.9])) as guard:
        queue = guard.review_queue
        assert queue is not None and queue.location == f"sqlite:///{tmp_path / 'review.db'}"
        assert guard.queue_for("default") is queue and guard.review_queues == [queue]
        decision = guard.check("Refund window?", "90 days")
        assert queue.get(decision.case_id or "").answer == "90 days"


def test_several_queues_are_reached_by_rule(tmp_path: Path) -> None:
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "actions": [{"type": "escalate", "queue": first}]},
        "chains": [{"name": "billing", "actions": [{"type": "escalate", "queue": second}]},
                   {"name": "faq", "actions": ["abstain"]}]})
    with Guard(policy) as guard:
        with pytest.raises(ConfigError, match="several review queues.*queue_for"):
            _ = guard.review_queue
        assert guard.queue_for("billing").location.endswith("b.db")
        assert guard.queue_for("default").location.endswith("a.db")
        assert guard.queue_for("faq") is None
    given = open_review_queue("sqlite:///:memory:")
    assert Guard(policy, review_queue=given).review_queue is given  # the given one wins
    given.close()
