"""The review queue: escalate a case, let a human decide, hand the decision back."""

from __future__ import annotations

import asyncio
import builtins
import getpass
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from numbers import Real
from pathlib import Path
from typing import Any

from ..errors import (
    AmbiguousCaseIdError,
    CaseAlreadyDecidedError,
    CaseNotFoundError,
    ConfigError,
    DecisionTimeoutError,
    InvalidCaseError,
)
from ..paths import cache_dir
from .case import CASE_STATUSES, CaseStatus, EscalatedCase
from .redaction import Redaction
from .store import Delivery, DeliveryStatus, ReviewStore, to_json
from .webhook import WebhookConfig, WebhookDispatcher, as_config, new_delivery_id

logger = logging.getLogger(__name__)

DecisionCallback = Callable[[EscalatedCase], Any]

#: Fields a :class:`Redaction` may name for the review queue.
CASE_FIELDS = ("question", "answer", "context", "metadata")

#: The most cases one ``list`` call returns.
MAX_LIST = 100_000

#: The shortest case id prefix looked up (as git does for commits).
MIN_PREFIX = 4

#: How many matches an ambiguous prefix error lists.
_SHOWN_MATCHES = 10

#: URL schemes of the PostgreSQL backend.
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg")


def default_reviewer() -> str:
    """The login name of whoever runs the process, for decisions made without a name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class ReviewQueue:
    """A durable queue of escalated cases and the reviewers' decisions on them.

    A chain ``submit``s a case and gets it back with an ``id`` and status ``pending``;
    it can then ``wait`` (blocking) or ``poll``. A reviewer ``approve``s, ``edit``s or
    ``reject``s it, through this API, the command line or the review page; each case
    is decided exactly once, even with reviewers racing in several processes (the
    losers get ``CaseAlreadyDecidedError``). Callbacks registered with ``on_decision``
    run once per decision made through this object. With a ``webhook``, each decision
    and its notification are recorded in one transaction and a background thread
    delivers the notification (at least once, resumed after a restart; see
    :mod:`semgrad_guard.review.webhook`). ``redact`` removes personal data from a case
    before it is stored, from the attempts a guard records with it too.

    >>> from semgrad_guard.review import open_review_queue
    >>> queue = open_review_queue("sqlite:///:memory:")
    >>> case = queue.submit(chain="support-rag", question="Refund window?", answer="90 days",
    ...                     score=0.0012, components={"semgrad": 0.0012},
    ...                     context=["Refunds within 30 days."], rule="support-rag")
    >>> queue.edit(case.id, answer="30 days", reviewer="alice").final_answer
    '30 days'
    >>> queue.wait(case.id, timeout=1).status
    'edited'
    """

    def __init__(self, store: ReviewStore, *, webhook: WebhookConfig | str | None = None,
                 redact: Redaction | None = None) -> None:
        self.store = store
        self._callbacks: list[DecisionCallback] = []
        self._decisions = 0
        self._decided = threading.Condition()
        if redact is not None and not isinstance(redact, Redaction):
            raise ConfigError(f"redact must be a Redaction, got {type(redact).__name__}")
        self.redact = None if redact is None else redact.check(CASE_FIELDS)
        self.webhook = None if webhook is None else as_config(webhook)
        self._dispatcher = None if self.webhook is None else \
            WebhookDispatcher(store, self.webhook).start()

    @property
    def location(self) -> str:
        """Where the cases live (a URL without password)."""
        return self.store.location

    def _redacted(self, question: str, answer: str, context: Sequence[str] | None,
                  metadata: Mapping[str, Any] | None) -> tuple[Any, Any, Any, Any]:
        """The case's texts under ``redact``; the attempts a guard records in the
        metadata (``attempts``) have each field named blanked in them too."""
        assert self.redact is not None
        meta = dict(metadata or {})
        record = {"question": question, "answer": answer, "context": list(context or []),
                  "metadata": meta}
        if isinstance(meta.get("attempts"), list):
            record["attempts"] = meta.pop("attempts")
        redacted = self.redact.apply(record)
        meta = redacted["metadata"]
        if "attempts" in redacted:
            meta = {**meta, "attempts": self.redact.replacement
                    if "metadata" in self.redact.fields else redacted["attempts"]}
        return redacted["question"], redacted["answer"], redacted["context"], meta

    def submit(self, *, chain: str, question: str, answer: str, score: float | None = None,
               components: Mapping[str, float] | None = None,
               context: Sequence[str] | None = None, rule: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> EscalatedCase:
        """Escalate a case; when this returns, the case is on disk (or in the database).

        ``score`` may be ``None`` (a score that could not be computed); ``metadata``
        must be JSON-serialisable. Bad fields raise ``InvalidCaseError``.
        """
        if self.redact is not None:
            question, answer, context, metadata = self._redacted(question, answer, context,
                                                                 metadata)
        case = EscalatedCase(
            id=uuid.uuid4().hex,
            chain=_text("chain", chain, required=True),
            question=_text("question", question),
            answer=_text("answer", answer),
            score=_score(score),
            components=_components(components),
            context=_context(context),
            rule=None if rule is None else _text("rule", rule),
            metadata=_metadata(metadata),
            created_at=datetime.now(UTC),
        )
        self.store.add(case)
        logger.info("case %s escalated from chain %s (score %s)", case.id, case.chain,
                    case.score)
        return case

    def get(self, case_id: str) -> EscalatedCase:
        """The case with that id, or with that unique id prefix (at least 4 characters,
        as ``review show 3f2a`` takes it); ``CaseNotFoundError`` if there is none,
        ``AmbiguousCaseIdError`` (listing the matches) if the prefix fits several."""
        if not isinstance(case_id, str) or text_problem(case_id):
            raise CaseNotFoundError(f"no escalated case has id {case_id!r} in {self.location}")
        case = self.store.get(case_id)
        if case is None:
            case = self.store.get(self._by_prefix(case_id))
        if case is None:  # deleted between the two reads
            raise CaseNotFoundError(f"no escalated case has id {case_id!r} in {self.location}")
        return case

    def resolve(self, case_id: str) -> str:
        """The full id of the case whose id is ``case_id`` or starts with it.

        >>> queue = open_review_queue("sqlite:///:memory:")
        >>> case = queue.submit(chain="rag", question="q", answer="a")
        >>> queue.resolve(case.id[:6]) == case.id
        True
        """
        if not isinstance(case_id, str) or text_problem(case_id):
            raise CaseNotFoundError(f"no escalated case has id {case_id!r} in {self.location}")
        if self.store.get(case_id) is not None:
            return case_id
        return self._by_prefix(case_id)

    def _by_prefix(self, case_id: str) -> str:
        if len(case_id.strip()) < MIN_PREFIX:
            raise CaseNotFoundError(
                f"no escalated case has id {case_id!r} in {self.location} (a prefix needs at "
                f"least {MIN_PREFIX} characters)")
        matches = self.store.ids_starting_with(case_id, _SHOWN_MATCHES + 1)
        if not matches:
            raise CaseNotFoundError(f"no escalated case has id {case_id!r} (nor an id "
                                    f"starting with it) in {self.location}")
        if len(matches) > 1:
            count = (f"more than {_SHOWN_MATCHES}" if len(matches) > _SHOWN_MATCHES
                     else str(len(matches)))
            shown = ", ".join(matches[:_SHOWN_MATCHES])
            raise AmbiguousCaseIdError(
                f"case id prefix {case_id!r} fits {count} cases in {self.location}: {shown}; "
                "give more characters", matches=matches[:_SHOWN_MATCHES])
        return matches[0]

    def poll(self, case_id: str) -> EscalatedCase | None:
        """The decided case, or ``None`` while it is still pending (never blocks)."""
        case = self.get(case_id)
        return case if case.is_decided else None

    def list(self, status: CaseStatus | None = None, chain: str | None = None,
             limit: int = 100) -> builtins.list[EscalatedCase]:
        """Cases oldest first, optionally only one status and/or one chain."""
        if status is not None and status not in CASE_STATUSES:
            raise ConfigError(f"status {status!r}: expected one of {', '.join(CASE_STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise ConfigError(f"limit {limit!r}: expected an integer from 1 to {MAX_LIST}")
        if chain is not None:
            _text("chain", chain, error=ConfigError)
        return self.store.list(status, chain, limit)

    def counts(self) -> dict[str, int]:
        """How many cases have each status, e.g. ``{"pending": 3, "approved": 10, ...}``."""
        return self.store.counts()

    def approve(self, case_id: str, reviewer: str | None = None) -> EscalatedCase:
        """Approve the answer as it is; it becomes the case's ``final_answer``."""
        case = self.get(case_id)
        return self._decide(case.id, "approved", final_answer=case.answer, reviewer=reviewer,
                            reason=None)

    def edit(self, case_id: str, answer: str, reviewer: str | None = None,
             reason: str | None = None) -> EscalatedCase:
        """Replace the answer with the reviewer's text and approve that."""
        return self._decide(self.resolve(case_id), "edited", final_answer=_text("answer", answer),
                            reviewer=reviewer, reason=reason)

    def reject(self, case_id: str, reviewer: str | None = None,
               reason: str | None = None) -> EscalatedCase:
        """Refuse the answer; the user gets no answer, ``reason`` says why."""
        return self._decide(self.resolve(case_id), "rejected", final_answer=None, reviewer=reviewer,
                            reason=reason)

    def _decide(self, case_id: str, status: CaseStatus, *, final_answer: str | None,
                reviewer: str | None, reason: str | None) -> EscalatedCase:
        reviewer = _text("reviewer", reviewer) if reviewer else default_reviewer()
        if not reviewer.isprintable() or len(reviewer) > 200:
            raise InvalidCaseError(f"reviewer {reviewer!r}: use up to 200 printable characters")
        reason = _text("reason", reason) if reason else None
        _text("case id", case_id, error=CaseNotFoundError)
        decided_at = datetime.now(UTC)
        deliveries = [] if self.webhook is None else [(new_delivery_id(), self.webhook.url)]
        case = self.store.decide(case_id, status, final_answer=final_answer, reviewer=reviewer,
                                 reason=reason, decided_at=decided_at, deliveries=deliveries)
        if case is None:
            current = self.get(case_id)
            mine = (current.status == status and current.reviewer == reviewer
                    and current.decided_at == decided_at)
            # A store that reconnects and retries can find its own committed decision.
            if not mine:
                raise CaseAlreadyDecidedError(
                    f"case {case_id} was already {current.status} by {current.reviewer} "
                    f"at {current.decided_at:%Y-%m-%d %H:%M:%S} UTC", case=current)
            case = current
        logger.info("case %s %s by %r", case.id, case.status, case.reviewer)
        if self._dispatcher is not None:
            self._dispatcher.wake()
        with self._decided:
            self._decisions += 1
            self._decided.notify_all()
        self._run_callbacks(case)
        return case

    def on_decision(self, callback: DecisionCallback) -> DecisionCallback:
        """Call ``callback(case)`` once for every decision made through this queue.

        Usable as a decorator. A callback that raises is logged and skipped: the
        decision is already recorded and the other callbacks still run.
        """
        if not callable(callback):
            raise ConfigError(f"on_decision needs a callable, got {callback!r}")
        self._callbacks.append(callback)
        return callback

    def _run_callbacks(self, case: EscalatedCase) -> None:
        for callback in builtins.list(self._callbacks):
            try:
                callback(case)
            except Exception:
                logger.exception("decision callback %r failed for case %s", callback, case.id)

    def wait(self, case_id: str, timeout: float | None = None,
             poll_interval: float = 0.5) -> EscalatedCase:
        """Block until the case is decided and return it.

        Checks the store every ``poll_interval`` seconds (decisions made in another
        process or by the review page's server), and wakes at once for decisions made
        through this object. Raises ``DecisionTimeoutError`` (a ``TimeoutError``)
        after ``timeout`` seconds; ``None`` waits for ever.
        """
        if poll_interval <= 0:
            raise ConfigError(f"poll_interval {poll_interval!r}: expected seconds > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._decided:
                seen = self._decisions
            case = self.get(case_id)
            if case.is_decided:
                return case
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DecisionTimeoutError(
                        f"case {case_id} is still pending after {timeout:g} s", case=case)
                pause = min(pause, remaining)
            with self._decided:
                self._decided.wait_for(self._decided_since(seen), pause)

    def _decided_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._decisions != seen

    async def wait_async(self, case_id: str, timeout: float | None = None,
                         poll_interval: float = 0.5) -> EscalatedCase:
        """``wait`` for asyncio code: polls without blocking the event loop."""
        if poll_interval <= 0:
            raise ConfigError(f"poll_interval {poll_interval!r}: expected seconds > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            case = await asyncio.to_thread(self.get, case_id)
            if case.is_decided:
                return case
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DecisionTimeoutError(
                        f"case {case_id} is still pending after {timeout:g} s", case=case)
                pause = min(pause, remaining)
            await asyncio.sleep(pause)

    def deliveries(self, status: DeliveryStatus | None = None) -> builtins.list[Delivery]:
        """The webhook outbox: every notification, with its status and last error."""
        return self.store.deliveries(status)

    def flush_webhooks(self, timeout: float = 10.0) -> int:
        """Deliver due webhook notifications for up to ``timeout`` seconds; returns how
        many still wait (they are delivered later, by this or another process)."""
        if self._dispatcher is None:
            return 0
        return self._dispatcher.flush(timeout)

    def purge(self, before: datetime, *, include_pending: bool = False) -> int:
        """Delete cases decided before ``before`` (and, with ``include_pending``, cases
        still pending that were escalated before it), with their webhook outbox rows;
        returns how many cases were deleted. The deleted text is overwritten on disk
        (SQLite) or vacuumed (PostgreSQL)."""
        if not isinstance(before, datetime):
            raise ConfigError(f"before {before!r}: expected a datetime")
        moment = before if before.tzinfo is not None else before.replace(tzinfo=UTC)
        deleted = self.store.purge(moment, include_pending)
        logger.info("purged %d cases from before %s", deleted, moment.isoformat())
        return deleted

    def close(self) -> None:
        """Stop delivering webhooks (after up to ``flush_on_close`` seconds for what is
        due) and release the store."""
        if self._dispatcher is not None:
            assert self.webhook is not None
            left = self._dispatcher.stop(self.webhook.flush_on_close)
            self._dispatcher = None
            if left:
                logger.warning("%d webhook notification(s) wait in the outbox of %s; any "
                               "process that opens the queue with this webhook delivers them",
                               left, self.location)
        self.store.close()

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReviewQueue({self.location!r})"


def check_queue_url(url: str | os.PathLike[str]) -> str:
    """The backend a queue URL names (``"sqlite"`` or ``"postgresql"``); ``ConfigError``
    naming the URL for any other scheme or a malformed SQLite URL. Reads nothing.

    >>> check_queue_url("sqlite:///review.db"), check_queue_url("postgresql://db/guard")
    ('sqlite', 'postgresql')
    """
    text = os.fspath(url)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"review queue {url!r}: expected sqlite:///path.db, a file path or "
                          "postgresql://...")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in POSTGRES_SCHEMES:
        return "postgresql"
    if scheme == "sqlite":
        path = text[len("sqlite://"):]
        if not path.startswith("/") or path == "/":
            raise ConfigError(f"review queue {text!r}: write sqlite:///relative/path.db or "
                              "sqlite:////absolute/path.db")
        return "sqlite"
    if scheme:
        raise ConfigError(f"review queue {text!r}: scheme {scheme!r} is not supported; "
                          "expected sqlite:///path.db, a file path or postgresql://...")
    return "sqlite"


def _sqlite_file(text: str) -> str:
    return text[len("sqlite:///"):] if "://" in text else text


def open_review_queue(url: str | os.PathLike[str] | None = None, *, create: bool = True,
                      webhook: WebhookConfig | str | None = None,
                      redact: Redaction | None = None) -> ReviewQueue:
    """Open the review queue at ``url``.

    - ``None``: the embedded default, ``<cache>/review.db`` (see ``semgrad_guard.paths``;
      its folders are created, readable by their owner only);
    - ``sqlite:///relative/review.db``, ``sqlite:////abs/review.db``, a plain file path,
      or ``sqlite:///:memory:`` (one process only, for tests);
    - ``postgresql://user:password@host:5432/db`` (needs psycopg 3).

    A SQLite file named by ``url`` must be in a folder that exists: a missing folder is
    almost always a mistyped path, so it is a ``ConfigError`` naming the URL, not a new
    folder. The file itself is created when missing, unless ``create=False`` (what the
    ``review`` commands do, so that a mistyped ``--queue`` is an error, not an empty
    queue). Any other scheme is a ``ConfigError``.

    >>> queue = open_review_queue("sqlite:///:memory:")
    >>> queue.counts()["pending"]
    0
    """
    from .sqlite_store import SQLiteReviewStore

    if redact is not None and isinstance(redact, Redaction):
        redact.check(CASE_FIELDS)  # before a store is opened for nothing
    if url is None:
        path = cache_dir() / "review.db"
        if not create and not path.exists():
            raise ConfigError(f"no review queue at {path} (the default queue; nothing was "
                              "escalated to it yet): name the queue (--queue), or create it "
                              "(--create; create=True in Python)")
        return ReviewQueue(SQLiteReviewStore(path), webhook=webhook, redact=redact)
    text = os.fspath(url)
    if check_queue_url(text) == "postgresql":
        from .postgres_store import PostgresReviewStore

        return ReviewQueue(PostgresReviewStore(text), webhook=webhook, redact=redact)
    file = _sqlite_file(text)
    if file != ":memory:":
        folder = Path(file).parent
        if not folder.is_dir():
            raise ConfigError(f"review queue {text!r}: the folder {str(folder)!r} does not "
                              "exist; create it, or correct the URL")
        if not create and not Path(file).is_file():
            raise ConfigError(f"review queue {text!r}: there is no queue file {file!r}; "
                              "correct the URL, or create the queue (--create; create=True "
                              "in Python)")
    return ReviewQueue(SQLiteReviewStore(file), webhook=webhook, redact=redact)


def _text(field: str, value: Any, *, required: bool = False,
          error: type[Exception] = InvalidCaseError) -> str:
    if not isinstance(value, str):
        raise error(f"{field} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise error(f"{field} must not be empty")
    problem = text_problem(value)
    if problem:
        raise error(f"{field} {problem}")
    return value


def text_problem(value: str) -> str | None:
    """What makes ``value`` unstorable on every backend, or ``None`` if it is fine.

    PostgreSQL text cannot hold NUL, and no UTF-8 database can hold a lone surrogate
    (what undecodable bytes become in Python); refusing both everywhere keeps the
    backends alike.
    """
    if "\x00" in value:
        return f"contains a NUL character at position {value.index(chr(0))}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate ({value[exc.start]!r}) at position {exc.start}: "
                "text must be valid Unicode")
    return None


def _check_json_text(field: str, value: Any) -> None:
    if isinstance(value, str):
        _text(field, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                _text(f"{field} key {key!r}", key)
            _check_json_text(f"{field}.{key}", item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_text(f"{field}[{index}]", item)


def _score(score: Any) -> float | None:
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, Real):
        raise InvalidCaseError(f"score must be a number or None, got {type(score).__name__}")
    value = float(score)
    if not math.isfinite(value):
        raise InvalidCaseError(f"score must be finite, got {value}; pass None when the "
                               "score could not be computed")
    return value


def _components(components: Mapping[str, float] | None) -> dict[str, float]:
    result: dict[str, float] = {}
    for name, value in (components or {}).items():
        number = _score(value)
        if not isinstance(name, str) or number is None:
            raise InvalidCaseError(f"components must map names to numbers, got {name!r}: "
                                   f"{value!r}")
        result[_text("component name", name)] = number
    return result


def _context(context: Sequence[str] | None) -> builtins.list[str]:
    if context is None:
        return []
    if isinstance(context, str | bytes):
        raise InvalidCaseError("context must be a list of documents, not one string")
    return [_text("context document", doc) for doc in context]


def _metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(metadata or {})
    try:
        to_json(data)
    except (TypeError, ValueError) as exc:
        raise InvalidCaseError(f"metadata must be JSON-serialisable: {exc}") from exc
    if any(not isinstance(key, str) for key in data):
        raise InvalidCaseError("metadata keys must be strings")
    _check_json_text("metadata", data)
    return data
