"""The audit trail: every decision the guard makes, in a SQLite file a user can query.

Nothing is lost under contention. The file is in WAL mode, so a long reader never
blocks a writer; a write that finds the file locked is retried with backoff for
``retry_for`` seconds. If the file stays locked (another program holds a write
transaction), the record is appended to a spool file beside it (``<file>.pending``,
flushed to disk) and the caller gets its decision, case id included; the next use of
the trail, from any process, moves spooled records into the file (each once: records
carry a unique id). With ``spool=False`` the caller gets ``AuditError`` instead, which
carries the decision.

Each decision keeps the prompt its answer was scored against (``prompt``), so that
re-scoring the trail (:func:`semgrad_guard.serving.bulk.read_audit`) asks the scorer
exactly what the guard asked it.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AuditError, ConfigError
from ..model.prompts import Prompt, QAPrompt
from ..review.case import GUARD_METADATA_KEYS
from ..scoring.result import SCORE_NAMES
from .decision import GuardDecision

T = TypeVar("T")

_COLUMNS = ("id", "time", "chain", "question", "answer", "chosen_answer", "action", "passed",
            "method", "score", "error_probability", "scores", "attempts", "case_id", "reason",
            "flags", "metadata", "prompt")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    chain TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT,
    chosen_answer TEXT,
    action TEXT NOT NULL,
    passed INTEGER NOT NULL,
    method TEXT,
    score REAL,
    error_probability REAL,
    scores TEXT NOT NULL,
    attempts TEXT NOT NULL,
    case_id TEXT,
    reason TEXT NOT NULL,
    flags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    uid TEXT,
    prompt TEXT
);
CREATE INDEX IF NOT EXISTS decisions_chain_time ON decisions (chain, time);
CREATE TABLE IF NOT EXISTS trail (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: The schema of the file (PRAGMA user_version); earlier files are brought up to it.
_SCHEMA_VERSION = 3

#: Fields a :class:`~semgrad_guard.review.Redaction` may name for the audit trail. Each
#: is blanked wherever the record holds it: ``question`` in the prompt and in each
#: attempt's query, ``answer`` in the chosen answer and each attempt's answer,
#: ``context`` (the retrieved passages) and ``prompt`` in each attempt's.
AUDIT_FIELDS = ("question", "answer", "chosen_answer", "attempts", "reason", "metadata",
                "prompt", "context")

# SQLite result codes (the low byte of extended codes) that mean "try again later".
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


@dataclass(frozen=True)
class AuditRecord:
    """One recorded decision. ``time`` is UTC; ``score`` is the value the rule read.

    ``prompt`` is what the chosen answer was scored against, as the scorer takes it:
    chat messages, a prompt text (one user message), or a
    :class:`~semgrad_guard.QAPrompt` (``to_dict()`` gives ``{"question": ...}``). It is
    the question itself when the guard scored an answer that came without a prompt, and
    ``None`` when only the answer's exact ids or a ready score came with it, and in
    records written before the trail kept prompts.
    """

    id: int
    time: datetime
    chain: str
    question: str
    answer: str | None
    chosen_answer: str | None
    action: str
    passed: bool
    method: str | None
    score: float | None
    error_probability: float | None
    scores: dict[str, float]
    attempts: list[dict[str, Any]]
    case_id: str | None
    reason: str
    flags: list[str]
    metadata: dict[str, Any]
    prompt: Prompt | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = self.time.isoformat()
        return d


class AuditTrail:
    """Records every decision; a SQLite file at ``path``, or in memory when ``None``.

    Safe to share between threads and processes (and between a sync and an async
    guard). ``retry_for`` bounds how long a write waits for a locked file; then the
    record goes to the spool (``spool=True``) or ``AuditError`` is raised. ``redact``
    (a :class:`~semgrad_guard.review.Redaction` over ``AUDIT_FIELDS``) removes
    personal data before it is written: a field named is blanked everywhere the record
    holds it, the attempts included (a prompt keeps its messages' roles), and patterns
    mask every text kept. A new file is created with mode 0600.

    >>> from semgrad_guard.policy import GuardDecision
    >>> audit = AuditTrail()
    >>> audit.record(GuardDecision(action="abstain", answer="I don't know", passed=False,
    ...     score=None, error_probability=None, attempts=[], rule="rag", case_id=None,
    ...     reason="score failed", raw=None, question="Why?"))
    1
    >>> [r.action for r in audit.records(chain="rag")]
    ['abstain']
    """

    def __init__(self, path: str | Path | None = None, *, retry_for: float = 5.0,
                 spool: bool = True, redact: Any = None) -> None:
        if retry_for < 0:
            raise ConfigError(f"retry_for {retry_for!r}: expected seconds >= 0")
        if redact is not None:
            from ..review.redaction import Redaction

            if not isinstance(redact, Redaction):
                raise ConfigError(f"redact must be a Redaction, got {type(redact).__name__}")
            redact.check(AUDIT_FIELDS)
        self.path = None if path is None else Path(path)
        self.retry_for = retry_for
        self.redact = redact
        self._spool = None if self.path is None or not spool else \
            self.path.with_name(self.path.name + ".pending")
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._trail_id: str | None = None
        try:
            self._retrying(self._connection)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit trail {self.path}: {exc}") from exc

    # -- the connection ----------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise AuditError(f"the audit trail {self.path} is closed")
            if self._db is not None and self._pid == os.getpid():
                return self._db
            if self.path is not None:
                from ..review.files import create_private_file

                create_private_file(self.path)
            # The busy handler waits a little; longer waits are the retry loop's, with
            # backoff and jitter, so that many writers do not wake in step.
            db = sqlite3.connect(":memory:" if self.path is None else str(self.path),
                                 timeout=0.2, isolation_level=None, check_same_thread=False)
            try:
                if self.path is not None:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA secure_delete=ON")
                self._migrate(db)
            except BaseException:
                db.close()
                raise
            self._db, self._pid = db, os.getpid()
            return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        # A current file needs no write lock to open: many processes start at once.
        if db.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
            # A trail written by an earlier version: its records have no uid, or no prompt.
            if "uid" not in columns:
                db.execute("ALTER TABLE decisions ADD COLUMN uid TEXT")
            if "prompt" not in columns:
                db.execute("ALTER TABLE decisions ADD COLUMN prompt TEXT")
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS decisions_uid ON decisions (uid)")
            db.execute("INSERT OR IGNORE INTO trail (key, value) VALUES ('id', ?)",
                       (uuid.uuid4().hex,))
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _retrying(self, work: Callable[[], T], *, deadline: float | None = None) -> T:
        """Run ``work``, retrying with backoff while the file is busy, until the deadline."""
        if deadline is None:
            deadline = time.monotonic() + self.retry_for
        delay = 0.005
        while True:
            try:
                return work()
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                busy = code in _BUSY_CODES or "locked" in str(exc) or "busy" in str(exc)
                remaining = deadline - time.monotonic()
                if not busy or remaining <= 0:
                    raise
            time.sleep(min(remaining, delay * (0.5 + random.random())))
            delay = min(delay * 2, 0.25)

    def _write(self, statements: Callable[[sqlite3.Connection], T], *,
               deadline: float | None = None) -> T:
        def attempt() -> T:
            from ..review.sqlite_store import write_transaction

            with self._lock:
                return write_transaction(self._connection(), statements)

        return self._retrying(attempt, deadline=deadline)

    def _read(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        def attempt() -> list[Any]:
            with self._lock:
                return self._connection().execute(sql, params).fetchall()

        try:
            return self._retrying(attempt)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit trail {self.path}: {exc}") from exc

    # -- identity ----------------------------------------------------------------------
    @property
    def trail_id(self) -> str:
        """The id this trail's file was created with (stable across processes); review
        cases escalated under this trail carry it, so that :meth:`case_ids` and
        ``Guard.reconcile`` know which cases the trail should hold."""
        if self._trail_id is None:
            self._trail_id = str(self._read("SELECT value FROM trail WHERE key = 'id'")[0][0])
        return self._trail_id

    def case_ids(self) -> set[str]:
        """The review case ids the trail holds a record of (spooled ones included)."""
        self._flush_spool()
        ids = {str(row[0]) for row in
               self._read("SELECT case_id FROM decisions WHERE case_id IS NOT NULL")}
        if self._spool is not None and _has_content(self._spool):
            ids |= {row["case_id"] for row in self._spooled() if row.get("case_id")}
        return ids

    # -- writing -----------------------------------------------------------------------
    def record(self, decision: GuardDecision, metadata: dict[str, Any] | None = None,
               *, at: float | None = None) -> int | None:
        """Store one decision; returns its record id (``None`` when it was spooled).

        A decision that escalated is recorded once per review case: recording it again
        (or after ``Guard.reconcile`` recovered it) changes nothing.
        """
        return self._store(self._row(decision, metadata, at), decision)

    def record_case(self, case: Any, *, answer: str | None, reason: str,
                    flags: tuple[str, ...] = ()) -> int | None:
        """Record the escalation behind a review case from what the case itself holds
        (its rule, question, answer, score and attempts); for cases whose process
        stopped before recording them (``Guard.reconcile``). Once per case, as
        :meth:`record`."""
        meta = {k: v for k, v in case.metadata.items() if k not in GUARD_METADATA_KEYS}
        attempts = case.metadata.get("attempts")
        attempts = attempts if isinstance(attempts, list) else []
        method = case.metadata.get("method")
        components = dict(case.components)
        fields = {"question": case.question, "answer": answer, "chosen_answer": case.answer,
                  "attempts": list(attempts), "reason": reason, "metadata": meta}
        row = self._fields_row(fields, at=case.created_at.timestamp(), case_id=case.id, extra={
            "chain": case.rule or case.chain, "action": "escalate", "passed": 0,
            "method": method, "score": case.score,
            "error_probability": components.get("error_probability"),
            "scores": json.dumps({k: v for k, v in components.items()
                                  if k in SCORE_NAMES}),
            "flags": json.dumps(list(flags))})
        decision = GuardDecision(action="escalate", answer=answer, passed=False, score=None,
                                 error_probability=None, attempts=[], rule=str(row["chain"]),
                                 case_id=case.id, reason=reason, question=case.question)
        return self._store(row, decision)

    def _store(self, row: dict[str, Any], decision: GuardDecision) -> int | None:
        self._flush_spool()
        try:
            return self._write(lambda db: _insert(db, row))
        except sqlite3.Error as exc:
            reason = f"{exc} (retried for {self.retry_for:g} s)"
            if self._spool is not None and _is_busy(exc):
                try:
                    self._append_to_spool(row)
                    return None
                except OSError as spool_exc:
                    reason += f"; the spool {self._spool} failed too: {spool_exc}"
            case = f" (review case {decision.case_id})" if decision.case_id else ""
            raise AuditError(f"the audit trail {self.path} could not record the "
                             f"{decision.action} decision{case}: {reason}",
                             decision=decision) from exc

    def _row(self, decision: GuardDecision, metadata: dict[str, Any] | None,
             at: float | None) -> dict[str, Any]:
        score = decision.score
        chosen = decision.chosen
        fields = {
            "question": decision.question,
            "answer": decision.answer,
            "chosen_answer": decision.chosen_answer,
            "attempts": [a.to_dict() for a in decision.attempts],
            "reason": decision.reason,
            "metadata": dict(metadata or {}),
            "prompt": _prompt_data(None if chosen is None else chosen.prompt),
        }
        return self._fields_row(fields, at=at, case_id=decision.case_id, extra={
            "chain": decision.rule,
            "action": decision.action,
            "passed": int(decision.passed),
            "method": None if score is None else score.method,
            "score": decision.value,
            "error_probability": decision.error_probability,
            "scores": json.dumps({} if score is None else dict(score.scores)),
            "flags": json.dumps(list(decision.flags)),
        })

    def _fields_row(self, fields: dict[str, Any], *, at: float | None, case_id: str | None,
                    extra: dict[str, Any]) -> dict[str, Any]:
        if self.redact is not None:
            fields = self.redact.apply(fields)
        prompt = fields.get("prompt")
        row = {
            # One record per review case: the same uid, however often it is recorded.
            "uid": uuid.uuid4().hex if case_id is None else f"case:{case_id}",
            "time": time.time() if at is None else at,
            "question": fields["question"],
            "answer": fields["answer"],
            "chosen_answer": fields["chosen_answer"],
            "attempts": json.dumps(fields["attempts"], default=str),
            "case_id": case_id,
            "reason": fields["reason"],
            "metadata": json.dumps(fields["metadata"], default=str),
            "prompt": None if prompt is None else json.dumps(prompt, default=str),
            **extra,
        }
        # Text that is not valid Unicode (lone surrogates) cannot be stored as UTF-8:
        # it is recorded with U+FFFD in their place rather than not recorded.
        return {key: _valid_text(value) if isinstance(value, str) else value
                for key, value in row.items()}

    # -- the spool ---------------------------------------------------------------------
    @contextmanager
    def _spool_file(self, mode: str) -> Iterator[Any]:
        assert self._spool is not None
        from ..review.files import create_private_file

        create_private_file(self._spool)
        with open(self._spool, mode, encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _append_to_spool(self, row: dict[str, Any]) -> None:
        with self._spool_file("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _flush_spool(self) -> None:
        """Move spooled records into the file (best effort: a busy file leaves them)."""
        if self._spool is None or not _has_content(self._spool):
            return
        with self._spool_file("r+") as handle:
            rows = _spool_rows(handle.read())
            try:
                self._write(lambda db: [_insert(db, row) for row in rows],
                            deadline=time.monotonic() + min(self.retry_for, 1.0))
            except sqlite3.Error:
                return
            handle.seek(0)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())

    def _spooled(self) -> list[dict[str, Any]]:
        with self._spool_file("r") as handle:
            return _spool_rows(handle.read())

    @property
    def pending(self) -> int:
        """How many records wait in the spool for the file to be writable again."""
        if self._spool is None or not _has_content(self._spool):
            return 0
        return sum(1 for line in self._spool.read_text(encoding="utf-8").split("\n")
                   if line.endswith("}"))

    # -- reading -----------------------------------------------------------------------
    def records(self, chain: str | None = None, action: str | None = None,
                since: datetime | float | None = None, limit: int | None = None
                ) -> list[AuditRecord]:
        """Recorded decisions, oldest first, filtered by chain, action and time."""
        self._flush_spool()
        where: list[str] = []
        params: list[Any] = []
        if chain is not None:
            where.append("chain = ?")
            params.append(_valid_text(chain))
        if action is not None:
            where.append("action = ?")
            params.append(_valid_text(action))
        if since is not None:
            where.append("time >= ?")
            params.append(_timestamp(since))
        sql = f"SELECT {', '.join(_COLUMNS)} FROM decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"limit {limit!r}: expected a positive integer")
            # The newest ``limit`` records, still oldest first.
            sql = f"SELECT * FROM ({sql} ORDER BY time DESC, id DESC LIMIT ?) ORDER BY time, id"
            params.append(min(limit, 2**62))
        else:
            sql += " ORDER BY time, id"
        return [_to_record(row) for row in self._read(sql, params)]

    def to_dicts(self, **filters: Any) -> list[dict[str, Any]]:
        """The records as plain data, for export (same filters as :meth:`records`)."""
        return [r.to_dict() for r in self.records(**filters)]

    def __len__(self) -> int:
        self._flush_spool()
        return int(self._read("SELECT COUNT(*) FROM decisions")[0][0])

    # -- retention ---------------------------------------------------------------------
    def purge(self, before: datetime | float) -> int:
        """Delete every record made before ``before``; returns how many were deleted.

        Deleted rows are overwritten in the file (``secure_delete``) and the write-ahead
        log is emptied, so the text does not linger on disk.
        """
        cutoff = _timestamp(before)
        self._flush_spool()
        try:
            deleted = self._write(lambda db: db.execute(
                "DELETE FROM decisions WHERE time < ?", (cutoff,)).rowcount)
            if self.path is not None:
                self._retrying(lambda: self._connection().execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        except sqlite3.Error as exc:
            raise AuditError(f"cannot purge the audit trail {self.path}: {exc}") from exc
        return int(deleted)

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None
            self._closed = True

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spool_rows(text: str) -> list[dict[str, Any]]:
    # A line cut short by a crash never returned to its caller: skip it.
    return [json.loads(line) for line in text.split("\n") if line.endswith("}")]


def _insert(db: sqlite3.Connection, row: dict[str, Any]) -> int:
    names = [name for name in _COLUMNS if name != "id"] + ["uid"]
    # A row spooled by an earlier version has no prompt.
    cursor = db.execute(
        f"INSERT OR IGNORE INTO decisions ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})", [row.get(name) for name in names])
    return int(cursor.lastrowid or 0)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in _BUSY_CODES or "locked" in str(exc) or "busy" in str(exc)


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _valid_text(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _timestamp(moment: datetime | float) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise ConfigError(f"expected a datetime or a Unix time, got {moment!r}")
    return float(moment)


def _to_record(row: tuple[Any, ...]) -> AuditRecord:
    (id_, t, chain, question, answer, chosen, action, passed, method, score, p, scores,
     attempts, case_id, reason, flags, metadata, prompt) = row
    return AuditRecord(
        id=int(id_), time=datetime.fromtimestamp(t, tz=UTC), chain=chain,
        question=question, answer=answer, chosen_answer=chosen, action=action,
        passed=bool(passed), method=method, score=score, error_probability=p,
        scores=json.loads(scores), attempts=json.loads(attempts), case_id=case_id,
        reason=reason, flags=json.loads(flags), metadata=json.loads(metadata),
        prompt=None if prompt is None else _prompt_from_data(json.loads(prompt)))


def _prompt_data(prompt: Prompt | None) -> Any:
    """A prompt as the trail stores it (JSON): a prompt text as the text, chat messages
    as a list of message objects, a :class:`QAPrompt` as ``{"question": ...}``: the
    shapes the scoring service's items and bulk re-scoring's records take."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, QAPrompt):
        return {"question": prompt.question}
    return [dict(m) if isinstance(m, Mapping) else m for m in prompt]


def _prompt_from_data(data: Any) -> Prompt:
    if isinstance(data, dict):
        return QAPrompt(str(data["question"]))
    return data  # type: ignore[no-any-return]
