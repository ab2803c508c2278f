"""Personal data at rest: private files, retention (purge) and redaction, queue and audit."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from semgrad_guard import qa_prompt
from semgrad_guard.cli import main
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.prompts import Prompt, QAPrompt
from semgrad_guard.policy import (
    Attempt,
    AttemptResult,
    AuditTrail,
    Guard,
    GuardDecision,
    PolicyConfig,
)
from semgrad_guard.review import Redaction, ReviewQueue, open_review_queue
from semgrad_guard.testing import ScriptedScorer

SECRET_TEXT = "patient-4711-private-history"


def _private(folder: Path, prefix: str) -> None:
    files = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    assert files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_queue_files_are_created_private(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o022)
    try:
        # The default queue's folders are created; a named queue's folder must exist.
        folder = tmp_path / "new" / "folder"
        monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(folder))
        with open_review_queue() as queue:
            case = queue.submit(chain="c", question=SECRET_TEXT, answer="a")
            queue.approve(case.id, reviewer="alice")
            _private(folder, "review.db")  # the file, its -wal and -shm
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def _disk_bytes(folder: Path, prefix: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith(prefix))


def test_purge_deletes_old_decided_cases_and_their_text(tmp_path: Path) -> None:
    with open_review_queue(tmp_path / "review.db") as queue:
        old = queue.submit(chain="c", question=SECRET_TEXT, answer="a", context=[SECRET_TEXT])
        queue.reject(old.id, reviewer="alice")
        waiting = queue.submit(chain="c", question="still pending", answer="a")
        assert SECRET_TEXT.encode() in _disk_bytes(tmp_path, "review.db")
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        assert queue.purge(cutoff) == 1  # pending cases stay unless asked
        assert [c.id for c in queue.list(status=None)] == [waiting.id]
        assert SECRET_TEXT.encode() not in _disk_bytes(tmp_path, "review.db")
        assert queue.purge(cutoff, include_pending=True) == 1
        assert queue.list(status=None) == []
        with pytest.raises(ConfigError):
            queue.purge("2025-01-01")  # type: ignore[arg-type]


def test_purge_on_both_backends_keeps_recent_cases(queue: ReviewQueue) -> None:
    first = queue.submit(chain="c", question="q1", answer="a")
    queue.approve(first.id, reviewer="alice")
    middle = datetime.now(UTC)
    second = queue.submit(chain="c", question="q2", answer="a")
    queue.approve(second.id, reviewer="alice")
    assert queue.purge(middle) == 1
    assert [c.id for c in queue.list(status=None)] == [second.id]


def test_review_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    with open_review_queue(url) as queue:
        case = queue.submit(chain="c", question="q", answer="a")
        queue.approve(case.id, reviewer="alice")
    assert main(["review", "purge", "--queue", url, "--before", "2000-01-01"]) == 0
    assert "deleted 0 case(s)" in capsys.readouterr().out
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert main(["review", "purge", "--queue", url, "--before", tomorrow]) == 0
    assert "deleted 1 case(s)" in capsys.readouterr().out
    assert main(["review", "purge", "--queue", url, "--before", "0d",
                 "--include-pending"]) == 0
    with pytest.raises(SystemExit):
        main(["review", "purge", "--queue", url, "--before", "last tuesday"])
    assert "expected a date" in capsys.readouterr().err


def _recorded_prompts(path: Path, redact: Redaction) -> list[Prompt | None]:
    """The prompts a trail under ``redact`` keeps of answers scored against a chain's
    chat messages, ``qa_prompt`` and the bare question."""
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"What about {SECRET_TEXT}?"}]
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5}, "actions": ["abstain"]}})
    with AuditTrail(path, redact=redact) as audit:
        guard = Guard(policy, scorer=ScriptedScorer([0.1, 0.2, 0.3]), audit=audit)
        for prompt in (messages, qa_prompt(SECRET_TEXT), None):
            guard.check(SECRET_TEXT, "a", prompt=prompt)
        return [r.prompt for r in audit.records()]


def test_a_recorded_prompt_is_redacted_as_its_question(tmp_path: Path) -> None:
    """A prompt holds the question: blanking the question blanks the prompt (its roles
    kept), patterns mask its texts, and ``prompt`` blanks the prompt alone."""
    blank = "[redacted]"
    redact = Redaction(fields=("question",))
    assert _recorded_prompts(tmp_path / "blank.db", redact) == [
        [{"role": "system", "content": blank}, {"role": "user", "content": blank}],
        QAPrompt(blank), blank]
    assert SECRET_TEXT.encode() not in _disk_bytes(tmp_path, "blank.db")

    masked = _recorded_prompts(tmp_path / "masked.db", Redaction(patterns=(r"patient-\d+",)))
    assert masked == [[{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": f"What about {blank}-private-history?"}],
                      QAPrompt(f"{blank}-private-history"), f"{blank}-private-history"]
    assert b"patient-4711" not in _disk_bytes(tmp_path, "masked.db")

    assert _recorded_prompts(tmp_path / "prompt.db", Redaction(fields=("prompt",)))[1:] == \
        [QAPrompt(blank), blank]
    with AuditTrail(tmp_path / "prompt.db") as audit:
        assert {r.question for r in audit.records()} == {SECRET_TEXT}


def _decision(question: str) -> GuardDecision:
    return GuardDecision(action="abstain", answer="-", passed=False, score=None,
                         error_probability=None, attempts=[], rule="rag", case_id=None,
                         reason="test", raw=None, question=question)


def test_audit_purge_api_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.db"
    with AuditTrail(path) as audit:
        audit.record(_decision(SECRET_TEXT), at=datetime(2024, 1, 1, tzinfo=UTC).timestamp())
        audit.record(_decision("recent"))
        assert SECRET_TEXT.encode() in _disk_bytes(tmp_path, "audit.db")
    assert main(["audit", "purge", "--trail", str(path), "--before", "2025-01-01"]) == 0
    assert "deleted 1 audit record(s)" in capsys.readouterr().out
    assert SECRET_TEXT.encode() not in _disk_bytes(tmp_path, "audit.db")
    with AuditTrail(path) as audit:
        assert [r.question for r in audit.records()] == ["recent"]
        assert audit.purge(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert main(["audit", "purge", "--trail", str(tmp_path / "none.db"),
                 "--before", "90d"]) == 2


def test_redaction_before_anything_is_stored(tmp_path: Path) -> None:
    redact = Redaction(fields=("context", "metadata.email"),
                       patterns=(r"[\w.+-]+@[\w-]+\.[\w.]+",))
    with open_review_queue(tmp_path / "review.db", redact=redact) as queue:
        case = queue.submit(chain="c", question="Mail bob@example.org about it?",
                            answer="Done.", context=["private record"],
                            metadata={"email": "x", "user": "u1", "note": "cc a@b.io"})
        stored = queue.get(case.id)
    assert stored.question == "Mail [redacted] about it?"
    assert stored.context == ["[redacted]"]
    assert stored.metadata == {"email": "[redacted]", "user": "u1", "note": "cc [redacted]"}
    assert b"bob@example.org" not in _disk_bytes(tmp_path, "review.db")
    assert b"private record" not in _disk_bytes(tmp_path, "review.db")

    with AuditTrail(tmp_path / "audit.db", redact=Redaction(fields=("question",))) as audit:
        audit.record(_decision(SECRET_TEXT), {"user": "u1"})
        (record,) = audit.records()
    assert record.question == "[redacted]" and record.metadata == {"user": "u1"}
    with pytest.raises(ConfigError, match="redaction field"):
        open_review_queue(tmp_path / "x.db", redact=Redaction(fields=("answers",)))
    with pytest.raises(ConfigError, match="pattern"):
        Redaction(patterns=("(unclosed",))


# One secret per field a record holds, each inside both attempts of a retry.
SECRETS = {"question": "question-secret-1111", "answer": "answer-secret-2222",
           "context": "context-secret-3333", "prompt": "prompt-secret-4444"}


def _retry_and_escalate(tmp_path: Path, redact: Redaction) -> bytes:
    """A question retried once (a rewritten query) and escalated, recorded in an audit
    trail and a review queue that both redact; the bytes of their files on disk."""
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.5},
        "actions": [{"type": "retry_with_retrieval", "k_schedule": [8],
                     "rewrite_query": "Look it up: {question}"},
                    {"type": "escalate", "pending_message": "pending"}]}})

    def chain(attempt: Attempt) -> AttemptResult:
        prompt = [{"role": "system", "content": f"Quote {SECRETS['prompt']}."},
                  {"role": "user", "content": attempt.query}]
        return AttemptResult(f"{SECRETS['answer']} at k={attempt.k}",
                             context=[f"{SECRETS['context']} at k={attempt.k}"],
                             prompt=prompt)

    queue_fields = tuple(name for name in redact.fields if name != "prompt")
    with AuditTrail(tmp_path / "audit.db", redact=redact) as audit, \
            open_review_queue(tmp_path / "review.db", redact=Redaction(
                fields=queue_fields, patterns=redact.patterns)) as queue:
        guard = Guard(policy, scorer=ScriptedScorer([0.9, 0.8]), audit=audit,
                      review_queue=queue)
        decision = guard.run(f"Is {SECRETS['question']} mine?", chain)
        assert decision.action == "escalate" and len(decision.attempts) == 2
        assert decision.attempts[1].attempt.query.startswith("Look it up: ")
        (record,) = audit.records()
        case = queue.get(str(decision.case_id))
        assert len(record.attempts) == 2 and len(case.metadata["attempts"]) == 2
    return _disk_bytes(tmp_path, "audit.db") + _disk_bytes(tmp_path, "review.db")


@pytest.mark.parametrize("name", list(SECRETS))
def test_a_field_named_is_blanked_in_every_attempt(tmp_path: Path, name: str) -> None:
    """Naming a field removes it from the whole record: the question from each attempt's
    (rewritten) query and the prompt, the answer, context and prompt from each attempt,
    in the audit trail and the review queue alike."""
    stored = _retry_and_escalate(tmp_path, Redaction(fields=(name,)))
    assert SECRETS[name].encode() not in stored
    for other, secret in SECRETS.items():  # the fields not named are kept
        if other not in (name, "prompt" if name == "question" else name):
            assert secret.encode() in stored, other


def test_patterns_mask_every_attempt(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    assert b"-secret-" in _retry_and_escalate(tmp_path / "kept", Redaction())
    stored = _retry_and_escalate(tmp_path, Redaction(patterns=(r"-secret-\d+",)))
    assert b"-secret-" not in stored
    assert b"question[redacted]" in stored and b"context[redacted] at k=8" in stored


def test_escalated_attempts_are_redacted_on_both_backends(queue_url: str) -> None:
    attempts = [{"number": n, "query": f"Is {SECRETS['question']} mine?", "k": k,
                 "answer": SECRETS["answer"], "context": [SECRETS["context"]]}
                for n, k in enumerate((None, 8))]
    redact = Redaction(fields=("question", "context"), patterns=(r"answer-secret-\d+",))
    with open_review_queue(queue_url, redact=redact) as queue:
        case = queue.submit(chain="c", question=SECRETS["question"], answer="a",
                            metadata={"attempts": attempts, "user": "u1"})
        stored = queue.get(case.id)
        assert stored.metadata == {"user": "u1", "attempts": [
            {"number": n, "query": "[redacted]", "k": k, "answer": "[redacted]",
             "context": ["[redacted]"]} for n, k in enumerate((None, 8))]}
        queue.redact = Redaction(fields=("metadata",))
        blanked = queue.submit(chain="c", question="q", answer="a",
                               metadata={"attempts": attempts, "user": "u1"})
        assert queue.get(blanked.id).metadata == {"user": "[redacted]",
                                                  "attempts": "[redacted]"}
