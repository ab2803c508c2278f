"""Bulk re-scoring without the cluster: records become wire items, a scorer actor's batch
function scores them, and the rows come back in order (``test_ray.py`` runs the same
steps on Ray Data)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from semgrad_guard import SemGradScorer, qa_prompt
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.prompts import Prompt
from semgrad_guard.policy import AttemptResult, AuditTrail, Guard, PolicyConfig
from semgrad_guard.serving.backend import ItemScorer
from semgrad_guard.serving.bulk import (
    _output_rows,
    _pipeline_rows,
    _score_batch,
    read_audit,
    read_jsonl,
)
from tests.core.tiny import tiny_bpe_model

QUESTIONS = ["what is the color of the sky?", "who wrote hamlet?", "how many legs has a cat?"]
ANSWERS = ["blue", "William Shakespeare", "four"]
PROMPT = [{"role": "user", "content": "say a colour"}]


@pytest.fixture(scope="module")
def base() -> SemGradScorer:
    scorer = SemGradScorer(tiny_bpe_model(chat=False), profile=None)
    assert scorer.model.prompt_format.kind == "plain"
    return scorer


@pytest.fixture(scope="module")
def chat() -> SemGradScorer:
    scorer = SemGradScorer(tiny_bpe_model(chat=True), profile=None)
    assert scorer.model.prompt_format.kind == "chat"
    return scorer


def rescore_here(scorer: SemGradScorer, records: list[dict[str, Any]],
                 batch_size: int = 2) -> list[dict[str, Any]]:
    """What ``rescore`` does, with one in-process actor in place of the Ray pool."""
    rows = _pipeline_rows(records)
    backend = ItemScorer(scorer)
    results: list[str | None] = [None] * len(records)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        scored = _score_batch(backend, {"row": [r["row"] for r in batch],
                                        "item": [r["item"] for r in batch]})
        for row, result in zip(scored["row"], scored["result"], strict=True):
            results[int(row)] = result
    return _output_rows(records, results, scorer.method)


def test_a_base_models_audit_trail_rescores_to_its_recorded_scores(base: SemGradScorer,
                                                                  tmp_path: Path) -> None:
    """Answers the guard scored against the bare question and answers it scored against
    ``qa_prompt(question)`` were both scored on the base model's plain prompt; re-scored
    from the audit trail, they get that prompt and their recorded scores back."""
    audit = AuditTrail(tmp_path / "audit.db")
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1e9}, "actions": ["abstain"]}})
    guard = Guard(policy, scorer=base, audit=audit)
    for question, answer in zip(QUESTIONS, ANSWERS, strict=True):
        guard.check(question, answer)
        guard.check(question, answer, prompt=qa_prompt(question))
    records = read_audit(tmp_path / "audit.db")
    assert [r["question"] for r in records] == [q for q in QUESTIONS for _ in range(2)]

    rows = rescore_here(base, records)
    for row in rows:
        here = base.score_text(qa_prompt(row["question"]), row["answer"])
        assert row["error"] is None and row["score"]["retokenized"]
        assert list(row["score"]["prompt_ids"]) == list(here.prompt_ids) == \
            base.model.prompt_ids(qa_prompt(row["question"]))
        assert row["value"] == pytest.approx(row["recorded_score"], rel=0, abs=1e-6)
        # Every score within 1e-6 (``nll``, a sum over the answer, within float32's 1e-6
        # relative precision).
        assert row["scores"] == pytest.approx(dict(here.scores), rel=1e-6, abs=1e-6)


def test_a_chat_models_audit_trail_rescores_against_the_bare_question(
        chat: SemGradScorer, tmp_path: Path) -> None:
    """The guard scores an answer that came without its prompt against the question as
    the user's message; the audit trail is re-scored the same way."""
    audit = AuditTrail(tmp_path / "audit.db")
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1e9}, "actions": ["abstain"]}})
    guard = Guard(policy, scorer=chat, audit=audit)
    guard.check(QUESTIONS[0], ANSWERS[0])
    [row] = rescore_here(chat, read_audit(tmp_path / "audit.db"))
    assert list(row["score"]["prompt_ids"]) == chat.model.prompt_ids(QUESTIONS[0])
    assert row["value"] == pytest.approx(row["recorded_score"], rel=0, abs=1e-6)


#: A chain's own chat prompt: a system message, retrieved context and the question.
RAG_PROMPT = [{"role": "system", "content": "Answer from the context, briefly."},
              {"role": "user", "content": "Context: the sky scatters blue light.\n"
                                          "Question: what is the color of the sky?"}]

#: A trail as the earlier schema created it, before decisions kept their prompt.
OLD_SCHEMA = """
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, chain TEXT NOT NULL,
    question TEXT NOT NULL, answer TEXT, chosen_answer TEXT, action TEXT NOT NULL,
    passed INTEGER NOT NULL, method TEXT, score REAL, error_probability REAL,
    scores TEXT NOT NULL, attempts TEXT NOT NULL, case_id TEXT, reason TEXT NOT NULL,
    flags TEXT NOT NULL, metadata TEXT NOT NULL, uid TEXT);
CREATE INDEX decisions_chain_time ON decisions (chain, time);
CREATE TABLE trail (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE UNIQUE INDEX decisions_uid ON decisions (uid);
INSERT INTO trail (key, value) VALUES ('id', 'earlier');
PRAGMA user_version=2;
"""


@pytest.mark.parametrize("kind", ["base", "chat"])
def test_the_audit_trail_keeps_the_scored_prompt_and_rescores_to_its_scores(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Answers scored against ``qa_prompt``, a chain's chat messages, a prompt text, the
    bare question, and a retry's rewritten query are re-scored against the prompt each
    was scored against, to its recorded score."""
    scorer: SemGradScorer = request.getfixturevalue(kind)
    audit = AuditTrail(tmp_path / "audit.db")
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1e9}, "actions": ["abstain"]}, "chains": [
        {"name": "rag", "threshold": {"max_score": 1e-9}, "keep": "last", "actions": [
            {"type": "retry_with_retrieval", "attempts": 1,
             "rewrite_query": "{question} Answer in one word."}, "abstain"]}]})
    guard = Guard(policy, scorer=scorer, audit=audit)
    q, a = QUESTIONS[0], ANSWERS[0]
    prompts: list[Prompt] = [qa_prompt(q), RAG_PROMPT, "Name the colour of the sky.", q]
    for prompt in prompts[:3]:
        guard.check(q, a, prompt=prompt)
    guard.check(q, a)
    decision = guard.run(q, lambda attempt: AttemptResult(
        a, prompt=qa_prompt(attempt.query)), run_name="rag")
    asked = decision.attempts[-1].attempt.query
    assert decision.chosen_index == 1 and asked != q
    prompts.append(qa_prompt(asked))

    assert [r.prompt for r in audit.records()] == prompts
    records = read_audit(tmp_path / "audit.db")
    assert [r.get("prompt") for r in records] == [None, RAG_PROMPT, prompts[2], q, None]
    assert [r["question"] for r in records] == [q, q, q, q, asked]
    rows = rescore_here(scorer, records)
    for prompt, row in zip(prompts, rows, strict=True):
        assert row["error"] is None and row["score"]["retokenized"]
        assert list(row["score"]["prompt_ids"]) == scorer.model.prompt_ids(prompt)
        assert row["value"] == pytest.approx(row["recorded_score"], rel=0, abs=1e-6)
        here = scorer.score_text(prompt, a)
        assert row["scores"] == pytest.approx(dict(here.scores), rel=1e-6, abs=1e-6)
    # Against the bare question, a chain's own prompt is another prompt altogether.
    bare = scorer.model.prompt_ids(q)
    assert [list(row["score"]["prompt_ids"]) == bare for row in rows] == \
        [kind == "base", False, False, True, False]


def test_a_trail_of_the_earlier_schema_rescores_against_the_question(
        chat: SemGradScorer, tmp_path: Path) -> None:
    """A record written before the trail kept prompts reads with no prompt and is
    re-scored against its question, as the guard scored an answer without a prompt; the
    trail is brought up to date and keeps prompts from then on."""
    path = tmp_path / "audit.db"
    q, a = QUESTIONS[1], ANSWERS[1]
    recorded = chat.score_text(q, a)
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(
            "INSERT INTO decisions (time, chain, question, answer, chosen_answer, action, "
            "passed, method, score, error_probability, scores, attempts, case_id, reason, "
            "flags, metadata, uid) VALUES (1.0, 'default', ?, ?, ?, 'pass', 1, 'semgrad', "
            "?, NULL, ?, '[]', NULL, 'under the threshold', '[\"retokenized\"]', '{}', "
            "'old-1')", (q, a, a, recorded.value, json.dumps(dict(recorded.scores))))
    db.close()

    [row] = rescore_here(chat, read_audit(path))
    assert row["prompt"] == q and row["question"] == q
    assert list(row["score"]["prompt_ids"]) == chat.model.prompt_ids(q)
    assert row["value"] == pytest.approx(row["recorded_score"], rel=0, abs=1e-6)

    with AuditTrail(path) as audit:
        policy = PolicyConfig.from_dict({"version": 1, "default": {
            "threshold": {"max_score": 1e9}, "actions": ["abstain"]}})
        Guard(policy, scorer=chat, audit=audit).check(q, a, prompt=RAG_PROMPT)
        assert [r.prompt for r in audit.records()] == [None, RAG_PROMPT]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()
    rows = rescore_here(chat, read_audit(path))
    assert [r["prompt"] for r in rows] == [q, RAG_PROMPT]
    for row in rows:
        assert row["value"] == pytest.approx(row["recorded_score"], rel=0, abs=1e-6)


@pytest.mark.parametrize("kind", ["base", "chat"])
def test_jsonl_questions_are_asked_in_the_models_own_format(kind: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest
                                                            ) -> None:
    scorer: SemGradScorer = request.getfixturevalue(kind)
    q, a = QUESTIONS[0], ANSWERS[0]
    lines = [{"id": "question", "question": q, "answer": a, "correct": True},
             {"id": "chat", "messages": qa_prompt(q).chat_messages(), "answer": a},
             {"id": "explicit", "messages": PROMPT, "question": q, "answer": a},
             {"id": "prompt", "prompt": q, "answer": a}]
    source = tmp_path / "traffic.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = {row["id"]: row for row in rescore_here(scorer, read_jsonl(source), batch_size=3)}

    expected: dict[str, Prompt] = {"question": qa_prompt(q), "chat": qa_prompt(q).chat_messages(),
                                   "explicit": PROMPT, "prompt": q}
    for name, prompt in expected.items():
        here = scorer.score_text(prompt, a)
        assert rows[name]["error"] is None
        assert list(rows[name]["score"]["prompt_ids"]) == list(here.prompt_ids)
        assert rows[name]["value"] == pytest.approx(here.value, rel=0, abs=1e-6)
        assert rows[name]["scores"] == pytest.approx(dict(here.scores), rel=1e-6, abs=1e-6)
    assert rows["question"]["correct"] is True  # fields pass through
    assert rows["explicit"]["question"] == q  # explicit messages win; the question stays
    as_question = rows["question"]["score"]["prompt_ids"]
    as_chat = rows["chat"]["score"]["prompt_ids"]
    # A chat model asks a question as the reference chat message; a base model in its
    # plain prompt, which the chat message's text is not.
    assert (as_question == as_chat) is (kind == "chat")


def test_a_record_without_prompt_or_answer_names_itself(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n"
                      + json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: not a scorable record"):
        read_jsonl(source)
    with pytest.raises(ConfigError, match=r"record 0: not a scorable record"):
        _pipeline_rows([{"answer": "no question"}])
