"""What the guard decided for one question."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from .._deprecation import warn_renamed
from ..scoring.result import UncertaintyScore
from .attempts import AttemptRecord

#: What the chain does with its answer.
GuardAction = Literal["pass", "abstain", "escalate"]


@dataclass(frozen=True)
class GuardDecision:
    """The outcome of guarding one question.

    ``answer`` is what the chain returns: the chosen answer (``pass``), the abstention
    message (``abstain``) or the pending message (``escalate``). ``passed`` is true only
    when the chosen answer was under its threshold (a ``flag`` action or a
    ``fail_open`` scoring failure passes an answer with ``passed=False``). ``score``,
    ``error_probability`` and ``raw`` belong to the chosen attempt: the one that passed,
    else the one the rule keeps (``Rule.keep``: the first by default); ``attempts``
    lists every attempt in order and ``chosen_index`` points at the chosen one, whose
    answer ``chosen_answer`` keeps even when ``answer`` is a message.
    ``rule`` is the name of the rule that decided. ``case_id`` is the review case of an
    escalation. ``flags`` names anything a reader should know (``"retokenized"``,
    ``"score_failed"``, ``"no_answer"`` (an attempt whose model gave no answer),
    ``"fail_open"``).

    >>> d = GuardDecision(action="pass", answer="Au", passed=True, score=None,
    ...                   error_probability=None, attempts=[], rule="default",
    ...                   case_id=None, reason="score under threshold", raw=None)
    >>> d.to_dict()["action"]
    'pass'
    """

    action: GuardAction
    answer: str | None
    passed: bool
    score: UncertaintyScore | None
    error_probability: float | None
    attempts: list[AttemptRecord]
    rule: str
    case_id: str | None
    reason: str
    raw: Any = field(default=None, repr=False, compare=False)
    question: str = ""
    chosen_answer: str | None = None
    chosen_index: int | None = None
    flags: tuple[str, ...] = ()

    @property
    def chain(self) -> str:
        """Deprecated: :attr:`rule` (the rule's name, by its new name)."""
        warn_renamed("GuardDecision.chain", "GuardDecision.rule")
        return self.rule

    @property
    def value(self) -> float | None:
        """The score value the rule read for the chosen attempt."""
        chosen = self.chosen
        return None if chosen is None else chosen.value

    @property
    def chosen(self) -> AttemptRecord | None:
        """The attempt whose answer (or score) the decision rests on."""
        if self.chosen_index is None or not self.attempts:
            return None
        return self.attempts[self.chosen_index]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs, metadata and JSON (``raw`` is left out)."""
        return {
            "action": self.action,
            "answer": self.answer,
            "passed": self.passed,
            "rule": self.rule,
            # The rule's name under its old key, for readers of earlier records; it goes
            # in the next release.
            "chain": self.rule,
            "question": self.question,
            "chosen_answer": self.chosen_answer,
            "chosen_index": self.chosen_index,
            "value": self.value,
            "method": None if self.score is None else self.score.method,
            "scores": None if self.score is None else dict(self.score.scores),
            "error_probability": self.error_probability,
            "attempts": [a.to_dict() for a in self.attempts],
            "case_id": self.case_id,
            "reason": self.reason,
            "flags": list(self.flags),
        }


class GuardedAnswer(str):
    """The text a guarded chain returns, carrying the decision behind it.

    It is a ``str`` (every string operation, parser and ``==`` work as before) with
    ``decision`` attached, so a chain that returns plain text still tells its caller the
    review case of an escalation. Operations that build a new string return a plain
    ``str``; the decision stays with the object the chain returned.

    >>> d = GuardDecision(action="escalate", answer="A reviewer will answer.", passed=False,
    ...                   score=None, error_probability=None, attempts=[], rule="rag",
    ...                   case_id="3f2a9c", reason="over the threshold", raw=None)
    >>> answer = GuardedAnswer.of(d)
    >>> answer == "A reviewer will answer.", answer.case_id, answer.action
    (True, '3f2a9c', 'escalate')
    """

    decision: GuardDecision

    @classmethod
    def of(cls, decision: GuardDecision) -> GuardedAnswer:
        """The decided answer (``""`` when there is none) with ``decision`` attached."""
        answer = cls(decision.answer if decision.answer is not None else "")
        answer.decision = decision
        return answer

    @property
    def case_id(self) -> str | None:
        """The review case of an escalation, else ``None``."""
        return self.decision.case_id

    @property
    def action(self) -> GuardAction:
        """``pass``, ``abstain`` or ``escalate``."""
        return self.decision.action

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (or copied) it is the plain text; the decision is not carried along.
        return (str, (str(self),))


def _accept_chain_keyword(init: Any) -> Any:
    """``GuardDecision(..., chain=name)``, the old keyword of ``rule``, for one release."""

    @functools.wraps(init)
    def __init__(self: GuardDecision, *args: Any, **kwargs: Any) -> None:
        if "chain" in kwargs:
            warn_renamed("GuardDecision(chain=...)", "GuardDecision(rule=...)")
            kwargs["rule"] = kwargs.pop("chain")
        init(self, *args, **kwargs)

    return __init__


GuardDecision.__init__ = _accept_chain_keyword(GuardDecision.__init__)  # type: ignore[method-assign]
