"""The guard: runs a chain under its policy and decides what the chain returns.

The decision logic is written once, as a generator that asks for the work it needs
(run an attempt, score it, submit a review case, call a custom action); a sync driver
(:meth:`Guard.run`, :meth:`Guard.check`) and an async driver (:meth:`Guard.arun`,
:meth:`Guard.acheck`) carry the work out, so both twins decide exactly alike.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    AbstainedError,
    ConfigError,
    EmptyResponseError,
    EscalatedError,
    NonFiniteScoreError,
    ScoringError,
)
from ..model.generation import Generation
from ..model.prompts import Prompt
from ..review.queue import MAX_LIST, open_review_queue
from ..scoring.result import UncertaintyScore, resolve_score_name
from ..scoring.scorer import Scorer
from .attempts import Attempt, AttemptRecord, AttemptResult
from .audit import AuditTrail
from .config import (
    DEFAULT_ABSTAIN_MESSAGE,
    DEFAULT_PENDING_MESSAGE,
    AbstainAction,
    CustomAction,
    EscalateAction,
    FlagAction,
    PolicyConfig,
    RetryWithRetrievalAction,
    Rule,
    load_policy,
)
from .decision import GuardDecision
from .telemetry import trace_decision


@dataclass(frozen=True)
class ActionContext:
    """What a custom action sees: the question, the rule, the attempts so far, and
    ``best``, the attempt the rule keeps when none passed (``Rule.keep``; ``best_index``
    is its position)."""

    question: str
    rule: Rule
    attempts: list[AttemptRecord]
    best: AttemptRecord
    run_name: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    best_index: int = 0

    def decision(self, action: str, answer: str | None, reason: str, *, passed: bool = False,
                 case_id: str | None = None) -> GuardDecision:
        """A decision resting on the kept attempt."""
        return _decision(self.question, self.rule, self.attempts, self.best_index, action,
                         answer, passed, reason, case_id=case_id)


AttemptFn = Callable[[Attempt], "AttemptResult | str"]
AsyncAttemptFn = Callable[[Attempt], "Awaitable[AttemptResult | str] | AttemptResult | str"]


# -- what the decision logic asks its driver for ---------------------------------------------
@dataclass(frozen=True)
class _RunAttempt:
    attempt: Attempt


@dataclass(frozen=True)
class _Score:
    rule: Rule
    question: str
    result: AttemptResult


@dataclass(frozen=True)
class _Escalate:
    action: EscalateAction
    payload: dict[str, Any]


@dataclass(frozen=True)
class _Custom:
    action: CustomAction
    context: ActionContext


@dataclass
class _Outcome:
    decision: GuardDecision
    raise_as: type[AbstainedError] | type[EscalatedError] | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_Request = _RunAttempt | _Score | _Escalate | _Custom
_Process = Generator[_Request, Any, _Outcome]


class Guard:
    """Applies a :class:`PolicyConfig` to a chain's answers.

    ``scorer`` is a :class:`~semgrad_guard.SemGradScorer` (or any object with
    ``score_generation`` and ``score_text``), or a mapping from rule name to scorer
    (``"default"`` covers the rest). ``audit`` records every decision;
    ``review_queue`` receives escalations (else the queue URL the rule names, opened
    when the guard is built so that a bad one fails here). With an audit trail the
    guard first records cases an earlier process escalated but never recorded
    (:meth:`reconcile`; ``reconcile=False`` leaves that to the caller).

    ``attempt_fn`` runs the chain once for an :class:`Attempt` (its ``k``, ``query`` and
    ``retriever`` say how to retrieve) and returns an :class:`AttemptResult`; give the
    generation when the chain has it, so the score uses the exact ids.

    >>> from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
    >>> from semgrad_guard.policy import AttemptResult, PolicyConfig
    >>> policy = PolicyConfig.from_dict({"version": 1, "default": {
    ...     "threshold": {"max_score": 0.02},
    ...     "actions": [{"type": "retry_with_retrieval", "k_schedule": [8]}, "abstain"]}})
    >>> lm = LocalModel.load()
    >>> guard = Guard(policy, scorer=SemGradScorer(lm))
    >>> def answer(attempt):
    ...     generation = lm.generate(qa_prompt(attempt.query))
    ...     return AttemptResult(generation.text, generation=generation)
    >>> decision = guard.run("What is the chemical symbol of gold?", answer)
    >>> decision.action in ("pass", "abstain"), len(decision.attempts) <= 2
    (True, True)
    """

    def __init__(self, policy: PolicyConfig, scorer: Scorer | Mapping[str, Scorer] | None = None,
                 audit: AuditTrail | None = None, review_queue: Any = None, *,
                 reconcile: bool = True) -> None:
        if not isinstance(policy, PolicyConfig):
            raise ConfigError(f"Guard needs a PolicyConfig, got {type(policy).__name__}; "
                              f"use load_policy(path) or PolicyConfig.from_dict(...)")
        self.policy = policy
        self.scorer = scorer
        self.audit = audit
        self._review_queue = review_queue
        self._queues: dict[str, Any] = {}
        self._validate()
        self._open_queues()
        if reconcile and self.audit is not None:
            self.reconcile()

    @classmethod
    def from_model(cls, policy: PolicyConfig, model: Any, *, audit: AuditTrail | None = None,
                   review_queue: Any = None, **scorer_kwargs: Any) -> Guard:
        """A guard with one :class:`SemGradScorer` per rule, built with the rule's score
        method and model profile. HybridGrad's output-head gradient is formed only for
        the rules that read ``hybridgrad`` (unless ``hybrid`` is given)."""
        from ..scoring.semgrad import SemGradScorer

        built: dict[tuple[str, str], Any] = {}
        scorers: dict[str, Any] = {}
        for rule in (policy.default, *policy.chains):
            key = (rule.score, rule.profile)
            if key not in built:
                profile = None if rule.profile == "default" else rule.profile
                kwargs = {"hybrid": rule.score == "hybridgrad", **scorer_kwargs}
                built[key] = SemGradScorer(model, method=rule.score, profile=profile, **kwargs)
            scorers[rule.name] = built[key]
        return cls(policy, scorer=scorers, audit=audit, review_queue=review_queue)

    @classmethod
    def from_policy(cls, policy: Guard | PolicyConfig | Mapping[str, Any] | str | Path,
                    *, scorer: Scorer | Mapping[str, Scorer] | None = None, model: Any = None,
                    audit: AuditTrail | str | Path | None = None,
                    review_queue: Any = None,
                    handlers: Mapping[str, Callable[..., Any]] | None = None,
                    handler_modules: Sequence[str] = ()) -> Guard:
        """The guard of a policy given any way a user holds one: a policy file's path, its
        dict, a :class:`PolicyConfig`, or a ready :class:`Guard` (returned as it is).

        ``model`` (a :class:`~semgrad_guard.LocalModel`) builds one scorer per rule, as
        :meth:`from_model` does; else ``scorer`` scores. ``audit`` is an
        :class:`AuditTrail` or the path of its SQLite file. A ready guard brings its own
        scorer, audit trail and review queue, so giving those too is an error.
        ``handlers`` / ``handler_modules`` are the code a path's or dict's ``custom``
        actions may call, as for :func:`load_policy`.

        >>> guard = Guard.from_policy({"version": 1, "default": {
        ...     "threshold": {"max_score": 0.5}}})
        >>> Guard.from_policy(guard) is guard, guard.rule_for("any").name
        (True, 'default')
        """
        if isinstance(policy, Guard):
            given = [name for name, part in (("scorer", scorer), ("model", model),
                                             ("audit", audit), ("review_queue", review_queue))
                     if part is not None]
            if given:
                raise ConfigError(f"a ready Guard brings its own scorer, audit trail and "
                                  f"review queue; give {given[0]}= to the Guard instead")
            return policy
        if isinstance(policy, PolicyConfig):
            config = policy
        elif isinstance(policy, str | Path):
            config = load_policy(policy, handlers=handlers, handler_modules=handler_modules)
        elif isinstance(policy, Mapping):
            config = PolicyConfig.from_dict(policy, handlers=handlers,
                                            handler_modules=handler_modules)
        else:
            raise ConfigError(f"policy must be a file path, a dict, a PolicyConfig or a Guard, "
                              f"got {type(policy).__name__}")
        trail = AuditTrail(audit) if isinstance(audit, str | Path) else audit
        if model is not None:
            if scorer is not None:
                raise ConfigError("give scorer or model, not both")
            return cls.from_model(config, model, audit=trail, review_queue=review_queue)
        return cls(config, scorer=scorer, audit=trail, review_queue=review_queue)

    def _validate(self) -> None:
        for rule in (self.policy.default, *self.policy.chains):
            for action in rule.actions:
                if isinstance(action, EscalateAction) and action.queue is None \
                        and self._review_queue is None:
                    raise ConfigError(
                        f"rule {rule.name!r} escalates but names no review queue: give the "
                        f"escalate action a 'queue' URL or pass review_queue= to Guard")
        if self._review_queue is not None and not callable(getattr(self._review_queue,
                                                                   "submit", None)):
            raise ConfigError("review_queue must have a submit(...) method")
        if isinstance(self.scorer, Mapping):
            names = {self.policy.default.name, *(c.name for c in self.policy.chains)}
            unknown = set(self.scorer) - names
            if unknown:
                raise ConfigError(f"scorer given for unknown rule {sorted(unknown)[0]!r}; "
                                  f"rules: {', '.join(sorted(names))}")

    # -- rules ---------------------------------------------------------------------------------
    def rule_for(self, run_name: str | None = None, tags: Sequence[str] = (),
                 metadata: Mapping[str, Any] | None = None) -> Rule:
        """The rule for a run: the first chain rule that matches, else the default."""
        return self.policy.rule_for(run_name, tags, metadata)

    # -- sync --------------------------------------------------------------------------------------
    def run(self, question: str, attempt_fn: AttemptFn, run_name: str | None = None,
            tags: Sequence[str] = (), metadata: Mapping[str, Any] | None = None, *,
            k: int | None = None) -> GuardDecision:
        """Run ``attempt_fn`` under the policy: retry while the rule says so, then decide.

        ``k`` is the chain's own retrieval depth, which ``k_multiplier`` widens when the
        rule gives no ``base_k``.
        """
        rule = self.rule_for(run_name, tags, metadata)
        process = _decide(question, rule, None, k, run_name, tuple(tags), dict(metadata or {}))
        return self._drive(process, attempt_fn, run_name, tags, metadata)

    def check(self, question: str, answer: str, generation: Generation | None = None,
              score: UncertaintyScore | None = None, context: Sequence[str] = (),
              run_name: str | None = None, tags: Sequence[str] = (),
              metadata: Mapping[str, Any] | None = None, *, raw: Any = None,
              prompt: Prompt | None = None, score_error: Exception | None = None
              ) -> GuardDecision:
        """Decide on one answer already produced: no retries (retry actions are skipped).

        The answer is scored as :class:`AttemptResult` says (``score``, else
        ``score_error``, else its ``generation``, else its text against ``prompt``).
        """
        rule = self.rule_for(run_name, tags, metadata)
        first = AttemptResult(answer=answer, generation=generation, score=score,
                              context=list(context), raw=raw, prompt=prompt,
                              score_error=score_error)
        process = _decide(question, rule, first, None, run_name, tuple(tags),
                          dict(metadata or {}))
        return self._drive(process, None, run_name, tags, metadata)

    def _drive(self, process: _Process, attempt_fn: AttemptFn | None, run_name: str | None,
               tags: Sequence[str], metadata: Mapping[str, Any] | None) -> GuardDecision:
        reply: Any = None
        while True:
            try:
                request = process.send(reply)
            except StopIteration as stop:
                outcome: _Outcome = stop.value
                break
            if isinstance(request, _RunAttempt):
                if attempt_fn is None:  # pragma: no cover - check() never asks
                    raise ConfigError("no attempt function to run")
                produced = attempt_fn(request.attempt)
                if inspect.isawaitable(produced):
                    _discard(produced)
                    raise ConfigError("Guard.run got an async attempt function; use Guard.arun")
                reply = _as_result(produced)
            elif isinstance(request, _Score):
                reply = self._score_capturing(request)
            elif isinstance(request, _Escalate):
                reply = self._submit(request)
            else:
                reply = request.action.function(request.context)
                if inspect.isawaitable(reply):
                    _discard(reply)
                    raise ConfigError("a custom action returned an awaitable; use Guard.arun")
        self._record(outcome, run_name, tags, metadata)
        return _finish(outcome)

    # -- async -------------------------------------------------------------------------------------
    async def arun(self, question: str, attempt_fn: AsyncAttemptFn, run_name: str | None = None,
                   tags: Sequence[str] = (), metadata: Mapping[str, Any] | None = None, *,
                   k: int | None = None) -> GuardDecision:
        """The async twin of :meth:`run`: ``attempt_fn`` may be a coroutine function;
        scoring, review submission and auditing run off the event loop."""
        rule = self.rule_for(run_name, tags, metadata)
        process = _decide(question, rule, None, k, run_name, tuple(tags), dict(metadata or {}))
        return await self._adrive(process, attempt_fn, run_name, tags, metadata)

    async def acheck(self, question: str, answer: str, generation: Generation | None = None,
                     score: UncertaintyScore | None = None, context: Sequence[str] = (),
                     run_name: str | None = None, tags: Sequence[str] = (),
                     metadata: Mapping[str, Any] | None = None, *, raw: Any = None,
                     prompt: Prompt | None = None, score_error: Exception | None = None
                     ) -> GuardDecision:
        """The async twin of :meth:`check`."""
        rule = self.rule_for(run_name, tags, metadata)
        first = AttemptResult(answer=answer, generation=generation, score=score,
                              context=list(context), raw=raw, prompt=prompt,
                              score_error=score_error)
        process = _decide(question, rule, first, None, run_name, tuple(tags),
                          dict(metadata or {}))
        return await self._adrive(process, None, run_name, tags, metadata)

    async def _adrive(self, process: _Process, attempt_fn: AsyncAttemptFn | None,
                      run_name: str | None, tags: Sequence[str],
                      metadata: Mapping[str, Any] | None) -> GuardDecision:
        reply: Any = None
        while True:
            try:
                request = process.send(reply)
            except StopIteration as stop:
                outcome: _Outcome = stop.value
                break
            if isinstance(request, _RunAttempt):
                if attempt_fn is None:  # pragma: no cover - acheck() never asks
                    raise ConfigError("no attempt function to run")
                produced = attempt_fn(request.attempt)
                if inspect.isawaitable(produced):
                    produced = await produced
                reply = _as_result(produced)
            elif isinstance(request, _Score):
                reply = await asyncio.to_thread(self._score_capturing, request)
            elif isinstance(request, _Escalate):
                reply = await asyncio.to_thread(self._submit, request)
            else:
                reply = request.action.function(request.context)
                if inspect.isawaitable(reply):
                    reply = await reply
        await asyncio.to_thread(self._record, outcome, run_name, tags, metadata)
        return _finish(outcome)

    # -- the work the decision asks for ------------------------------------------------------------
    def scorer_for(self, rule: Rule) -> Scorer | None:
        """The scorer of a rule's answers (``None`` when the guard has none)."""
        if isinstance(self.scorer, Mapping):
            return self.scorer.get(rule.name, self.scorer.get(self.policy.default.name))
        return self.scorer

    def score(self, rule: Rule, question: str, result: AttemptResult) -> UncertaintyScore:
        """The score of one attempt under a rule (raises on a scoring failure, and
        :class:`EmptyResponseError` when the model gave no answer: an empty answer is
        never scored, whatever score came with it)."""
        if result.no_answer:
            raise EmptyResponseError("the model gave no answer: there is no text to score")
        score = result.score
        if score is None and result.score_error is not None:
            raise result.score_error
        if score is None:
            scorer = self.scorer_for(rule)
            if scorer is None:
                raise ScoringError(f"rule {rule.name!r} has no scorer and the answer came "
                                   f"without a score")
            if result.generation is not None:
                score = scorer.score_generation(result.generation)
            else:
                prompt = result.prompt if result.prompt is not None else question
                score = scorer.score_text(prompt, result.answer)
        try:
            name = resolve_score_name(rule.score, score.scores)
            if score.method != name:
                score = score.with_method(name)
        except KeyError as exc:
            raise ScoringError(f"rule {rule.name!r} reads score {rule.score!r}, which the "
                               f"scorer did not compute ({exc.args[0]})") from exc
        # A pass that produced NaN anywhere is broken as a whole, and a case or audit row
        # cannot hold the value: the answer follows the failure mode, unscored.
        bad = {name: value for name, value in {**score.components, **score.scores,
                                              score.method: score.value}.items()
               if not math.isfinite(value)}
        if bad:
            listed = ", ".join(f"{name} = {value}" for name, value in sorted(bad.items()))
            raise NonFiniteScoreError(f"the score of this answer is not finite: {listed}")
        return score

    def _score_capturing(self, request: _Score) -> UncertaintyScore | BaseException:
        try:
            return self.score(request.rule, request.question, request.result)
        except Exception as exc:  # every scoring failure follows on_score_failure
            return exc

    # -- review queues -------------------------------------------------------------------------
    def _escalations(self) -> list[tuple[Rule, EscalateAction]]:
        return [(rule, action) for rule in (self.policy.default, *self.policy.chains)
                for action in rule.actions if isinstance(action, EscalateAction)]

    def _open_queues(self) -> None:
        # Opened now, so that a queue that cannot be opened (a missing folder, a
        # database that refuses the connection) fails here, not at the first escalation.
        if self._review_queue is not None:
            return
        try:
            for _, action in self._escalations():
                if action.queue is not None and action.queue not in self._queues:
                    self._queues[action.queue] = open_review_queue(action.queue)
        except BaseException:
            self.close()
            raise

    def _queue(self, action: EscalateAction) -> Any:
        if self._review_queue is not None:
            return self._review_queue
        if action.queue is None:  # pragma: no cover - rejected in _validate
            raise ConfigError("escalate action without a review queue")
        return self._queues[action.queue]

    @property
    def review_queue(self) -> Any:
        """The review queue escalations go to: the one given to the guard, else the one
        the policy file names (``None`` when no rule escalates). A policy that names
        several queues has no single one: use :meth:`queue_for` or :attr:`review_queues`.

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> policy = PolicyConfig.from_dict({"version": 1, "default": {
        ...     "threshold": {"max_score": 0.02},
        ...     "actions": [{"type": "escalate", "queue": f"sqlite:///{folder}/review.db"}]}})
        >>> Guard(policy).review_queue.location.endswith("review.db")
        True
        """
        if self._review_queue is not None:
            return self._review_queue
        queues = list(self._queues.values())
        if len(queues) > 1:
            raise ConfigError(
                "the policy escalates to several review queues ("
                + ", ".join(q.location for q in queues)
                + "); use guard.queue_for(rule_name) or guard.review_queues")
        return queues[0] if queues else None

    @property
    def review_queues(self) -> list[Any]:
        """Every review queue the guard escalates to."""
        if self._review_queue is not None:
            return [self._review_queue]
        return list(self._queues.values())

    def queue_for(self, rule: str | Rule) -> Any:
        """The review queue a rule's escalations go to (``None`` if it does not escalate)."""
        found = self.policy.rule(rule) if isinstance(rule, str) else rule
        for action in found.actions:
            if isinstance(action, EscalateAction):
                return self._queue(action)
        return None

    def close(self) -> None:
        """Close the review queues the guard opened from the policy file's URLs."""
        for queue in self._queues.values():
            queue.close()
        self._queues.clear()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reconcile(self) -> int:
        """Record in the audit trail every case escalated under it that it holds no
        record of; returns how many were recorded.

        A process that stops between queuing an escalated case and recording its
        decision (killed, out of memory, the machine off) leaves a case the trail does
        not know. Each case carries the id of the trail it belongs to, so this finds
        exactly those; it runs when a guard with an audit trail is built, and may run at
        any time, from any number of processes: a case is recorded once however often
        (a record made after the case was recovered is ignored). A recovered record is
        flagged ``"reconciled"``.
        """
        if self.audit is None:
            return 0
        trail = self.audit.trail_id
        known: set[str] | None = None
        recorded = 0
        for queue in self.review_queues:
            if not callable(getattr(queue, "list", None)):
                continue  # a queue that cannot list its cases cannot be reconciled
            cases = [c for c in queue.list(status=None, limit=MAX_LIST)
                     if c.metadata.get("audit_trail") == trail]
            if not cases:
                continue
            if known is None:
                known = self.audit.case_ids()
            for case in cases:
                if case.id in known:
                    continue
                self.audit.record_case(
                    case, answer=self._pending_message(case.rule),
                    reason=f"escalated to review case {case.id}; recorded from the review "
                           f"queue, since the process that escalated it stopped before "
                           f"recording it", flags=("reconciled",))
                known.add(case.id)
                recorded += 1
        return recorded

    def _pending_message(self, rule_name: str | None) -> str:
        try:
            rule = self.policy.rule(rule_name or "")
        except ConfigError:
            return DEFAULT_PENDING_MESSAGE
        return next((a.pending_message for a in rule.actions if isinstance(a, EscalateAction)),
                    DEFAULT_PENDING_MESSAGE)

    def _submit(self, request: _Escalate) -> str:
        payload = request.payload
        if self.audit is not None:
            payload = {**payload, "metadata": {**payload["metadata"],
                                               "audit_trail": self.audit.trail_id}}
        case = self._queue(request.action).submit(**payload)
        return str(getattr(case, "id", case))

    def _record(self, outcome: _Outcome, run_name: str | None, tags: Sequence[str],
                metadata: Mapping[str, Any] | None) -> None:
        decision = outcome.decision
        trace_decision(decision, run_name, self.policy.rule(decision.rule).threshold)
        if self.audit is not None:
            self.audit.record(outcome.decision, {"run_name": run_name, "tags": list(tags),
                                                 **dict(metadata or {})})


def _discard(awaitable: Any) -> None:
    # A coroutine the sync driver cannot run: close it so it is not reported as never
    # awaited.
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _as_result(produced: Any) -> Any:
    if isinstance(produced, str):
        return AttemptResult(answer=produced)
    if isinstance(produced, AttemptResult) or inspect.isawaitable(produced):
        return produced
    raise ConfigError(f"an attempt function must return an AttemptResult or a str, got "
                      f"{type(produced).__name__}")


def _finish(outcome: _Outcome) -> GuardDecision:
    if outcome.raise_as is not None:
        raise outcome.raise_as(outcome.message, decision=outcome.decision)
    return outcome.decision


# -- the decision, written once ------------------------------------------------------------------
def _decide(question: str, rule: Rule, first: AttemptResult | None, chain_k: int | None,
            run_name: str | None, tags: tuple[str, ...], metadata: dict[str, Any]) -> _Process:
    records: list[AttemptRecord] = []

    def judge(attempt: Attempt, result: AttemptResult) -> Generator[_Request, Any, _Outcome | None]:
        scored = yield _Score(rule, question, result)
        if isinstance(scored, BaseException):
            if rule.on_score_failure == "raise":
                if isinstance(scored, Exception) and not isinstance(scored, ScoringError) \
                        and not isinstance(scored, ConfigError):
                    raise ScoringError(f"scoring failed: {scored}") from scored
                raise scored
            # No answer is not scored: it follows the failure mode like a failed score,
            # and is recorded as what it is.
            no_answer = isinstance(scored, EmptyResponseError)
            records.append(AttemptRecord(attempt, result.answer, None, None, None, False,
                                         list(result.context), f"{type(scored).__name__}: "
                                         f"{scored}", result.raw, no_answer,
                                         result.scored_prompt(question)))
            if rule.on_score_failure == "fail_open":
                what = "the model gave no answer" if no_answer else \
                    f"scoring failed ({type(scored).__name__}: {scored})"
                return _Outcome(_decision(
                    question, rule, records, len(records) - 1, "pass", result.answer, False,
                    f"{what}; on_score_failure is fail_open",
                    flags=("no_answer" if no_answer else "score_failed", "fail_open")))
            return None
        probability = rule.error_probability(scored.value)
        records.append(AttemptRecord(attempt, result.answer, scored, scored.value, probability,
                                     rule.passes(scored.value), list(result.context),
                                     None, result.raw, prompt=result.scored_prompt(question)))
        return None

    attempt = Attempt(number=0, k=None, query=question)
    result = first if first is not None else (yield _RunAttempt(attempt))
    early = yield from judge(attempt, result)
    if early is not None:
        return early
    if records[-1].passed:
        return _pass(question, rule, records, len(records) - 1)

    for action in rule.actions:
        if isinstance(action, RetryWithRetrievalAction):
            if first is not None:
                continue  # check(): one answer, nothing to retry
            for retry in range(1, action.attempts + 1):
                attempt = action.attempt(retry, len(records), question, records[-1].answer,
                                         chain_k)
                result = yield _RunAttempt(attempt)
                early = yield from judge(attempt, result)
                if early is not None:
                    return early
                if records[-1].passed:
                    return _pass(question, rule, records, len(records) - 1)
            continue
        best = _chosen_index(records, rule.keep)
        summary = _summary(rule, records, best)
        if isinstance(action, AbstainAction):
            decision = _decision(question, rule, records, best, "abstain", action.message, False,
                                 f"{summary}; abstained")
            return _Outcome(decision, AbstainedError if action.raise_error else None,
                            f"abstained: {summary}")
        if isinstance(action, FlagAction):
            return _Outcome(_decision(question, rule, records, best, "pass",
                                      records[best].answer, False,
                                      f"{summary}; passed on, flagged uncertain",
                                      flags=("uncertain",)))
        if isinstance(action, EscalateAction):
            case_id = yield _Escalate(action, _case(question, rule, best, records,
                                                    run_name, tags, metadata))
            decision = _decision(question, rule, records, best, "escalate",
                                 action.pending_message, False,
                                 f"{summary}; escalated to review case {case_id}",
                                 case_id=case_id)
            return _Outcome(decision, EscalatedError if action.raise_error else None,
                            f"escalated to review case {case_id}: {summary}")
        context = ActionContext(question, rule, list(records), records[best], run_name, tags,
                                metadata, best)
        handled = yield _Custom(action, context)
        if handled is None:
            continue
        if not isinstance(handled, GuardDecision):
            raise ConfigError(f"custom action {action.handler!r} returned "
                              f"{type(handled).__name__}; expected a GuardDecision or None")
        return _Outcome(handled)

    # The actions ran out without ending the walk: fail closed.
    best = _chosen_index(records, rule.keep)
    return _Outcome(_decision(question, rule, records, best, "abstain", DEFAULT_ABSTAIN_MESSAGE,
                              False, f"{_summary(rule, records, best)}; no action ended the "
                              f"walk, abstained"))


def _chosen_index(records: list[AttemptRecord], keep: str) -> int:
    """The attempt a decision rests on when none passed, as the rule's ``keep`` says."""
    if keep == "first":
        return 0
    if keep == "last":
        return len(records) - 1
    scored = [i for i, r in enumerate(records) if r.value is not None]
    if not scored:
        return len(records) - 1
    return min(scored, key=lambda i: (records[i].value, i))  # type: ignore[return-value,arg-type]


def _threshold_text(rule: Rule) -> str:
    t = rule.threshold
    if t.max_score is not None:
        return f"max_score {t.max_score:g}"
    return f"max_error_probability {t.max_error_probability:g}"


def _value_text(record: AttemptRecord, rule: Rule) -> str:
    if record.no_answer:
        return "no answer"
    if record.value is None:
        return "unscored"
    if rule.threshold.max_score is None and record.error_probability is not None:
        return f"{rule.score} {record.value:.4g} (p_error {record.error_probability:.3f})"
    return f"{rule.score} {record.value:.4g}"


def _summary(rule: Rule, records: list[AttemptRecord], best: int) -> str:
    n = len(records)
    empty = sum(r.no_answer for r in records)
    failed = sum(r.value is None and not r.no_answer for r in records)
    what = f"{n} attempt{'s' if n != 1 else ''} over {_threshold_text(rule)}"
    unscored = [f"{empty} gave no answer"] if empty else []
    unscored += [f"{failed} could not be scored"] if failed else []
    if unscored:
        what += f" ({', '.join(unscored)}, treated as uncertain)"
    kept = f" (keep: {rule.keep})" if n > 1 else ""
    return f"{what}; kept attempt {best}{kept}, {_value_text(records[best], rule)}"


def _pass(question: str, rule: Rule, records: list[AttemptRecord], index: int
          ) -> _Outcome:
    record = records[index]
    reason = (f"{_value_text(record, rule)} within {_threshold_text(rule)} on attempt "
              f"{record.attempt.number}")
    return _Outcome(_decision(question, rule, records, index, "pass", record.answer, True,
                              reason))


def _decision(question: str, rule: Rule, records: list[AttemptRecord], index: int,
              action: str, answer: str | None, passed: bool, reason: str, *,
              case_id: str | None = None, flags: tuple[str, ...] = ()) -> GuardDecision:
    chosen = records[index]
    extra = list(flags)
    if chosen.score is not None and chosen.score.retokenized:
        extra.append("retokenized")
    if chosen.score is not None and chosen.score.out_of_domain and rule.reads_probability:
        # The learned score fell back to its robust score: the answer was far from the
        # data the profile was calibrated on.
        extra.append("out_of_domain")
    if any(r.no_answer for r in records) and "no_answer" not in extra:
        extra.append("no_answer")
    if any(r.error is not None and not r.no_answer for r in records) \
            and "score_failed" not in extra:
        extra.append("score_failed")
    return GuardDecision(
        action=action,  # type: ignore[arg-type]
        answer=answer, passed=passed, score=chosen.score,
        error_probability=chosen.error_probability, attempts=list(records), rule=rule.name,
        case_id=case_id, reason=reason, raw=chosen.raw, question=question,
        chosen_answer=chosen.answer, chosen_index=index, flags=tuple(extra))


def _case(question: str, rule: Rule, chosen: int, records: list[AttemptRecord],
          run_name: str | None, tags: tuple[str, ...], metadata: dict[str, Any]
          ) -> dict[str, Any]:
    best = records[chosen]
    score = best.score
    components: dict[str, float] = {}
    if score is not None:
        components = {**score.scores, **score.components}
    if best.error_probability is not None:
        components["error_probability"] = best.error_probability
    return {
        "chain": rule.name,
        "question": question,
        "answer": best.answer,
        "score": None if best.value is None else float(best.value),
        "components": components,
        "context": list(best.context),
        "rule": rule.name,
        "metadata": {**metadata, "run_name": run_name, "tags": list(tags),
                     "method": rule.score, "attempts": [r.to_dict() for r in records],
                     "threshold": _threshold_data(rule), "keep": rule.keep,
                     "chosen_attempt": chosen},
    }


def _threshold_data(rule: Rule) -> dict[str, Any]:
    """The rule's threshold as the reviewer needs it: the ceiling, and its calibration."""
    threshold = rule.threshold
    data: dict[str, Any] = {"score": rule.score}
    if threshold.max_score is not None:
        data["max_score"] = threshold.max_score
    else:
        data["max_error_probability"] = threshold.max_error_probability
    if threshold.calibration is not None:
        data["calibration"] = threshold.calibration.model_dump(mode="json", exclude_none=True)
    return data
