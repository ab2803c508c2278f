"""The policy file: per-chain rules that map an uncertainty score to actions.

A policy is a default rule plus an ordered list of chain rules. A chain rule names
which chains it covers (``match``), which score to read, the threshold under which an
answer passes, and the actions to walk when it does not. Chain rules inherit every
key they leave out from the default rule. ``examples/policy.yaml`` annotates every key.

>>> policy = PolicyConfig.from_dict({
...     "version": 1,
...     "default": {"threshold": {"max_score": 0.05}, "actions": ["abstain"]},
...     "chains": [{"name": "rag", "match": {"tags": ["faq"]},
...                 "actions": [{"type": "retry_with_retrieval", "attempts": 2,
...                              "k_schedule": [8, 16]}, "escalate"]}],
... })
>>> policy.rule_for(tags=["faq"]).name, policy.rule_for(run_name="other").name
('rag', 'default')
"""

from __future__ import annotations

import fnmatch
import importlib
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .._deprecation import renamed_module_attributes, warn_renamed
from ..calibration.thresholds import PlattFit, platt_error_probability
from ..errors import ConfigError
from ..review.queue import check_queue_url
from ..scoring.result import (
    AUTO_SCORE,
    PROBABILITY_SCORES,
    SCORE_NAMES,
    PolicyScoreName,
    ScoreName,
)
from .attempts import Attempt
from .config_errors import describe_errors
from .policy_yaml import read_policy_yaml

#: What the chain returns when the guard abstains and no message is configured.
DEFAULT_ABSTAIN_MESSAGE = "I am not confident enough in an answer to this question."
#: What the chain returns while a case waits for a human reviewer.
DEFAULT_PENDING_MESSAGE = ("This question has been passed to a human reviewer; "
                           "an answer will follow once it is reviewed.")
#: Upper bound on the extra attempts of a rule (all its retry actions together).
MAX_RETRY_ATTEMPTS = 10
#: The only version of the policy file format.
POLICY_VERSION = 1

#: Which attempt a decision rests on when no attempt passes (see ``Rule.keep``).
KeepAttempt = Literal["first", "last", "best_score"]


class _Strict(BaseModel):
    # NaN and infinities are refused in every number of a policy.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MatchRule(_Strict):
    """Which chains a rule covers. Every criterion given must hold (and)."""

    run_name: list[str] = Field(
        default_factory=list,
        description="Run names (shell-style patterns, e.g. 'rag-*'); any one may match.")
    tags: list[str] = Field(
        default_factory=list, description="Tags of the run; the rule matches if any is present.")
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Metadata keys the run must carry with these values.")

    @field_validator("run_name", "tags", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _not_empty(self) -> MatchRule:
        if not (self.run_name or self.tags or self.metadata):
            raise ValueError("a match needs at least one of run_name, tags, metadata")
        return self

    def matches(self, run_name: str | None, tags: Sequence[str],
                metadata: Mapping[str, Any] | None) -> bool:
        """Whether a run with these attributes falls under the rule."""
        if self.run_name and not (run_name is not None and any(
                fnmatch.fnmatchcase(run_name, pattern) for pattern in self.run_name)):
            return False
        if self.tags and not set(self.tags) & set(tags):
            return False
        meta = metadata or {}
        return all(key in meta and meta[key] == value for key, value in self.metadata.items())


class PlattCalibration(_Strict):
    """A fitted probability of error: ``p = 1 / (1 + exp(-(coef * f(score) + intercept)))``
    with ``f`` the identity or the natural logarithm (``transform: log``)."""

    method: Literal["platt"] = Field("platt", description="Logistic regression on the score.")
    score: ScoreName = Field(description="The score the calibration was fitted on.")
    transform: Literal["identity", "log"] = Field(
        "identity", description="Applied to the score before the regression.")
    coef: float = Field(description="Slope on the raw score.")
    intercept: float = Field(description="Intercept.")
    n: int | None = Field(None, ge=1, description="Number of labelled answers it was fitted on.")
    data: str | None = Field(None, description="The labelled data it was fitted on.")
    model: str | None = Field(None, description="The model whose answers were scored.")

    @classmethod
    def from_fit(cls, fit: PlattFit, *, score: str, data: str | None = None,
                 model: str | None = None) -> PlattCalibration:
        """The calibration a policy file stores for a fitted one."""
        return cls.model_validate({"score": score, "transform": fit.transform,
                                   "coef": fit.coef, "intercept": fit.intercept, "n": fit.n,
                                   "data": data, "model": model})

    def error_probability(self, value: float) -> float:
        """The calibrated probability that an answer with this score is wrong."""
        return float(platt_error_probability(value, self.coef, self.intercept,
                                             self.transform))


class Threshold(_Strict):
    """When an answer passes: exactly one of ``max_score`` and ``max_error_probability``.

    An answer passes when its value is **at or under** the threshold.
    ``max_error_probability`` reads a score that is a probability of error
    (``score: learned`` or ``auto``) as it is; any other score needs a fitted
    ``calibration`` to map it to one.
    """

    max_score: float | None = Field(
        None, ge=0.0,
        description="Largest raw score (higher = more uncertain) that still passes.")
    max_error_probability: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Largest probability of error that still passes (0.3: pass answers "
                    "at most 30% likely to be wrong); a score other than 'learned' or "
                    "'auto' needs 'calibration'.")
    calibration: PlattCalibration | None = Field(
        None, description="Fitted probability of error (written by fit-thresholds).")
    fit: dict[str, str | int | float | None] | None = Field(
        None, description="How fit-thresholds chose this threshold (for the record only).")

    @model_validator(mode="after")
    def _exactly_one(self) -> Threshold:
        if (self.max_score is None) == (self.max_error_probability is None):
            raise ValueError("give exactly one of max_score and max_error_probability")
        return self

    @property
    def limit(self) -> float:
        """The number an answer's value is held to: ``max_score``, or
        ``max_error_probability`` for a rule that speaks probabilities."""
        return self.max_score if self.max_score is not None \
            else float(self.max_error_probability or 0.0)

    def error_probability(self, value: float) -> float | None:
        """The calibrated probability of error of a score, when a calibration is stored."""
        return None if self.calibration is None else self.calibration.error_probability(value)

    def passes(self, value: float) -> bool:
        """Whether a raw score value passes this threshold (through its calibration for
        ``max_error_probability``; a rule whose score is a probability asks
        :meth:`Rule.passes`)."""
        if self.max_score is not None:
            return value <= self.max_score
        probability = self.error_probability(value)
        return probability is not None and probability <= (self.max_error_probability or 0.0)


class AbstainAction(_Strict):
    """Return an abstention instead of the uncertain answer (terminal)."""

    type: Literal["abstain"] = "abstain"
    message: str = Field(DEFAULT_ABSTAIN_MESSAGE, description="What the chain returns instead.")
    raise_error: bool = Field(
        False, description="Raise semgrad_guard.errors.AbstainedError (carrying the decision) "
                           "instead of returning the message.")


class FlagAction(_Strict):
    """Pass the uncertain answer on, marked ``passed=False`` (shadow mode; terminal)."""

    type: Literal["flag"] = "flag"


_QUERY_FIELDS = {"question", "attempt", "previous_answer"}


class RetryWithRetrievalAction(_Strict):
    """Run the chain again with wider or different retrieval, until an attempt passes.

    Retry ``i`` (1-based) uses ``k = k_schedule[i-1]`` or
    ``k = round(base_k * k_multiplier ** i)`` (``base_k`` defaults to the chain's own k
    when the caller tells the guard), the query ``rewrite_query`` formatted with
    ``{question}``, ``{attempt}`` and ``{previous_answer}``, and the retriever
    ``retrievers[i-1]`` (the last one repeats). When no attempt passes, the next action
    rests on the attempt the rule's ``keep`` names.
    """

    type: Literal["retry_with_retrieval"] = "retry_with_retrieval"
    attempts: int = Field(
        None, ge=1, le=MAX_RETRY_ATTEMPTS,  # type: ignore[assignment]
        description="Extra attempts (default: the length of k_schedule, else 2).")
    k_schedule: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="The retrieval depth of each retry, in order.")
    base_k: int | None = Field(
        None, ge=1, description="The chain's own depth, to multiply (else the caller's k).")
    k_multiplier: float = Field(2.0, ge=1.0, description="Depth growth per retry.")
    rewrite_query: str | None = Field(
        None, description="Template of the retried query: {question}, {attempt}, "
                          "{previous_answer}.")
    retrievers: list[str] = Field(
        default_factory=list, description="Names of alternative retrievers, one per retry.")

    @model_validator(mode="before")
    @classmethod
    def _default_attempts(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("attempts") is None:
            schedule = data.get("k_schedule")
            data = {**data, "attempts": len(schedule) if isinstance(schedule, list) and
                    schedule else 2}
        return data

    @field_validator("rewrite_query")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from exc
        unknown = names - _QUERY_FIELDS
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; allowed: "
                             + ", ".join("{" + n + "}" for n in sorted(_QUERY_FIELDS)))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RetryWithRetrievalAction:
        if self.k_schedule is not None and self.base_k is not None:
            raise ValueError("give k_schedule or base_k (with k_multiplier), not both")
        if self.k_schedule is not None and len(self.k_schedule) < self.attempts:
            raise ValueError(f"k_schedule has {len(self.k_schedule)} depths for "
                             f"{self.attempts} attempts")
        return self

    def attempt(self, retry: int, number: int, question: str, previous_answer: str | None,
                chain_k: int | None) -> Attempt:
        """The ``retry``-th (1-based) retry of this action, numbered ``number`` overall."""
        if self.k_schedule is not None:
            k: int | None = self.k_schedule[retry - 1]
        else:
            base = self.base_k if self.base_k is not None else chain_k
            k = None if base is None else max(1, round(base * self.k_multiplier ** retry))
        query = question
        if self.rewrite_query is not None:
            query = self.rewrite_query.format(question=question, attempt=number,
                                              previous_answer=previous_answer or "")
        retriever = self.retrievers[min(retry, len(self.retrievers)) - 1] if self.retrievers \
            else None
        return Attempt(number=number, k=k, query=query, retriever=retriever)


class EscalateAction(_Strict):
    """Send the case to a human review queue (terminal)."""

    type: Literal["escalate"] = "escalate"
    queue: str | None = Field(
        None, description="Review queue URL, e.g. 'sqlite:///review.db' or "
                          "'postgresql://host/db' (else the queue given to the Guard).")
    raise_error: bool = Field(
        False, description="Raise semgrad_guard.errors.EscalatedError (carrying the decision) "
                           "instead of returning the pending message.")
    pending_message: str = Field(DEFAULT_PENDING_MESSAGE,
                                 description="What the chain returns while the case waits.")

    @field_validator("queue")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        # The scheme is checked here, when the file is read; whether the folder exists
        # is checked when a Guard opens the queue.
        if value is not None:
            check_queue_url(value)
        return value


class CustomAction(_Strict):
    """The escape hatch: a function called with an :class:`ActionContext`.

    It returns a :class:`GuardDecision` to end the walk, or ``None`` to go on to the
    next action. ``handler`` is a callable, or a name the application registered
    (``load_policy(path, handlers={"name": function})``), or an import path
    ``"package.module:function"`` inside a module the application allowed
    (``handler_modules=["package"]``); resolved when the policy is loaded. A policy file
    cannot name any other code (``os:system`` is refused).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)

    type: Literal["custom"] = "custom"
    handler: str | Callable[..., Any] = Field(
        description="A callable, or its import path 'package.module:function'.")
    _resolved: Callable[..., Any] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> CustomAction:
        context = info.context or {}
        if isinstance(self.handler, str) and context.get("check_handlers") is False:
            return self  # read to be edited, not run: nothing is imported
        self._resolved = _handler(self.handler, context.get("handlers") or {},
                                  context.get("handler_modules") or ()) \
            if isinstance(self.handler, str) else self.handler
        return self

    @property
    def function(self) -> Callable[..., Any]:
        """The resolved handler."""
        if self._resolved is None:
            raise ConfigError(f"custom action handler {self.handler!r} was not resolved: "
                              "the policy was loaded with check_handlers=False")
        return self._resolved


def _handler(name: str, handlers: Mapping[str, Callable[..., Any]],
             modules: Sequence[str]) -> Callable[..., Any]:
    if name in handlers:
        if not callable(handlers[name]):
            raise ValueError(f"handler {name!r} was registered as a "
                             f"{type(handlers[name]).__name__}, not a function")
        return handlers[name]
    module_name = name.partition(":")[0]
    if ":" in name and any(module_name == allowed or module_name.startswith(allowed + ".")
                           for allowed in modules):
        return _import_callable(name)
    known = ", ".join(sorted(handlers)) or "none"
    raise ValueError(
        f"handler {name!r} is not allowed: a policy names only handlers the application "
        f"registers (handlers=; registered: {known}) or functions in modules it allows "
        f"(handler_modules=; allowed: {', '.join(modules) or 'none'})")


def _import_callable(path: str) -> Callable[..., Any]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler {path!r} is not an import path 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import handler {path!r}: {exc}") from exc
    if not callable(target):
        raise ValueError(f"handler {path!r} is not callable")
    return target  # type: ignore[no-any-return]


Action = Annotated[
    AbstainAction | FlagAction | RetryWithRetrievalAction | EscalateAction | CustomAction,
    Field(discriminator="type"),
]
#: Action type names, as the policy file spells them.
ACTION_TYPES = ("abstain", "flag", "retry_with_retrieval", "escalate", "custom")
_TERMINAL = (AbstainAction, FlagAction, EscalateAction)


class Rule(_Strict):
    """The rule for one chain (or the default rule)."""

    name: str = Field("default", min_length=1, description="The rule's name, used in audits.")
    match: MatchRule | None = Field(
        None, description="Which runs this rule covers (default: run_name equal to name).")
    score: PolicyScoreName = Field(
        "semgrad", description="Which score to read: " + ", ".join(SCORE_NAMES) + ", or "
                               "'auto' (the best score the model profile measured: the "
                               "learned probability of error).")
    profile: str = Field(
        "auto", description="Model profile: 'auto' (cached calibrated profile, else the "
                            "default anchor), 'default', or a profile file path.")
    threshold: Threshold = Field(description="When an answer passes.")
    actions: list[Action] = Field(
        default_factory=lambda: _default_actions(), min_length=1,
        description="What to do, in order, when an answer does not pass.")
    on_score_failure: Literal["fail_closed", "fail_open", "raise"] = Field(
        "fail_closed", description="When a score cannot be computed: treat the answer as "
                                   "uncertain, pass it (flagged), or raise.")
    keep: KeepAttempt = Field(
        "first", description="When retries leave no attempt under the threshold, the attempt "
                             "the next action (abstain, flag, escalate) rests on: 'first' (the "
                             "chain's own answer), 'last' (the widest retrieval) or "
                             "'best_score' (the lowest score; scores of different prompts "
                             "are not on one scale, so this is a weak choice).")

    @field_validator("actions", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"type": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _terminal_last(self) -> Rule:
        for i, action in enumerate(self.actions[:-1]):
            if isinstance(action, _TERMINAL):
                raise ValueError(f"action {i} ({action.type}) ends the walk, so the actions "
                                 f"after it could never run; put it last")
        if self.retry_budget > MAX_RETRY_ATTEMPTS:
            raise ValueError(f"the retry actions add up to {self.retry_budget} attempts; at "
                             f"most {MAX_RETRY_ATTEMPTS} are allowed per rule")
        threshold = self.threshold
        if threshold.max_error_probability is not None and threshold.calibration is None \
                and not self.reads_probability:
            raise ValueError(f"max_error_probability on score {self.score!r} needs a fitted "
                             f"'calibration' (run semgrad-guard fit-thresholds), or read a "
                             f"score that is a probability: score: learned (or auto)")
        if threshold.calibration is not None and self.reads_probability:
            raise ValueError(f"score {self.score!r} is already a probability of error: drop "
                             f"the threshold's 'calibration'")
        return self

    @property
    def reads_probability(self) -> bool:
        """Whether the rule's score is itself a probability of error."""
        return self.score in PROBABILITY_SCORES or self.score == AUTO_SCORE

    def error_probability(self, value: float) -> float | None:
        """The probability of error of a score value under this rule: the value itself
        for a probability score, else the threshold's calibration (``None`` without one)."""
        if self.reads_probability:
            return float(value)
        return self.threshold.error_probability(value)

    def passes(self, value: float) -> bool:
        """Whether an answer with this score value passes the rule's threshold."""
        if self.reads_probability and self.threshold.max_error_probability is not None:
            return value <= self.threshold.max_error_probability
        return self.threshold.passes(value)

    def matches(self, run_name: str | None, tags: Sequence[str],
                metadata: Mapping[str, Any] | None) -> bool:
        """Whether a run falls under this rule."""
        if self.match is None:
            return run_name == self.name
        return self.match.matches(run_name, tags, metadata)

    @property
    def retry_budget(self) -> int:
        """The most attempts this rule can make after the first."""
        return sum(a.attempts for a in self.actions if isinstance(a, RetryWithRetrievalAction))


def _default_actions() -> list[Action]:
    return [AbstainAction.model_validate({})]


_INHERITED_EXCLUDED = ("name", "match")


class PolicyConfig(_Strict):
    """A whole policy: a default rule and ordered chain rules (first match wins)."""

    version: Literal[1] = Field(description="Policy file format version.")
    default: Rule = Field(description="The rule for runs no chain rule matches.")
    chains: list[Rule] = Field(
        default_factory=list, description="Chain rules, tried in order; they inherit the "
                                          "default rule's keys.")
    source: str | None = Field(None, exclude=True, description="The file it was loaded from.")

    @model_validator(mode="before")
    @classmethod
    def _inherit_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        default, chains = data.get("default"), data.get("chains")
        if isinstance(default, dict) and isinstance(chains, list):
            inherited = {k: v for k, v in default.items() if k not in _INHERITED_EXCLUDED}
            data = {**data, "chains": [{**inherited, **c} if isinstance(c, dict) else c
                                       for c in chains]}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyConfig:
        seen = {self.default.name}
        for i, chain in enumerate(self.chains):
            if chain.name in seen:
                raise ValueError(f"chains.{i}.name: {chain.name!r} is used twice "
                                 f"(names must be unique, and 'default' is the default rule's)")
            seen.add(chain.name)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None,
                  handlers: Mapping[str, Callable[..., Any]] | None = None,
                  handler_modules: Sequence[str] = (),
                  check_handlers: bool = True) -> PolicyConfig:
        """Validate a policy given as a dict; errors name the key path and allowed values.

        ``handlers`` and ``handler_modules`` are the only code ``custom`` actions given
        by name may call (see :class:`CustomAction`); ``check_handlers=False`` validates
        a policy that is only edited, never run, without resolving them.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source or 'policy'}: expected a mapping at the top level, got "
                              f"{type(data).__name__}")
        if isinstance(handler_modules, str):
            handler_modules = [handler_modules]
        try:
            policy = cls.model_validate({**data}, context={
                "handlers": dict(handlers or {}), "handler_modules": list(handler_modules),
                "check_handlers": check_handlers})
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, source or "policy", cls, ACTION_TYPES)) from None
        return policy.model_copy(update={"source": source}) if source else policy

    @classmethod
    def from_yaml(cls, path: str | Path, *,
                  handlers: Mapping[str, Callable[..., Any]] | None = None,
                  handler_modules: Sequence[str] = ()) -> PolicyConfig:
        """Load a policy file (see :func:`load_policy`)."""
        return load_policy(path, handlers=handlers, handler_modules=handler_modules)

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (custom handlers given as callables stay callables)."""
        return self.model_dump(mode="python", exclude_none=True)

    def rule(self, name: str) -> Rule:
        """The rule with this name (``"default"`` for the default rule)."""
        if name == self.default.name:
            return self.default
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise ConfigError(f"no rule named {name!r}; known: "
                          + ", ".join([self.default.name, *(c.name for c in self.chains)]))

    def chain(self, name: str) -> Rule:
        """Deprecated: :meth:`rule` (the same, by its new name)."""
        warn_renamed("PolicyConfig.chain()", "PolicyConfig.rule()")
        return self.rule(name)

    def rule_for(self, run_name: str | None = None, tags: Sequence[str] = (),
                 metadata: Mapping[str, Any] | None = None) -> Rule:
        """The first chain rule that matches, else the default rule."""
        for chain in self.chains:
            if chain.matches(run_name, tags, metadata):
                return chain
        return self.default


def load_policy(path: str | Path, *, handlers: Mapping[str, Callable[..., Any]] | None = None,
                handler_modules: Sequence[str] = ()) -> PolicyConfig:
    """Load and validate a YAML policy file.

    A policy file is trusted configuration (it decides which answers reach users and
    where escalated cases, with their personal data, are written), but it is not code:
    it is read as plain data, bounded in size, depth and alias expansion, and its
    ``custom`` actions can only name the ``handlers`` (or functions in the
    ``handler_modules``) the application passes here. Any bad file is a ``ConfigError``.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "policy.yaml"
    >>> _ = f.write_text("version: 1\\ndefault:\\n  threshold: {max_score: 0.05}\\n")
    >>> load_policy(f).default.actions[0].type
    'abstain'
    """
    path = Path(path)
    data = read_policy_yaml(path)
    return PolicyConfig.from_dict(data if data is not None else {}, source=str(path),
                                  handlers=handlers, handler_modules=handler_modules)


#: ``ChainPolicy``, the old name of :class:`Rule`, still works for one release.
__getattr__ = renamed_module_attributes(__name__, {"ChainPolicy": ("Rule", Rule)})
