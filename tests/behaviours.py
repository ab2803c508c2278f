"""Shared guard behaviours: the scenarios every integration must pass.

A plain module, free of any framework and of tests. The policy tests run each
:data:`SCENARIOS` entry through ``Guard.run`` and ``Guard.arun``; the LangChain and
LlamaIndex tests run the same entries through their wrappers, so every front end is
held to the same decisions.

How to use a scenario from an integration test::

    @pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
    def test_wrapper(scenario):
        # semgrad_guard.testing.ScriptedScorer: one entry consumed per attempt
        scorer = ScriptedScorer(scenario.scores)
        policy = PolicyConfig.from_dict(scenario.policy)
        guard = Guard(policy, scorer=scorer, review_queue=scenario.review_queue())
        # Build a chain whose n-th call (n = 0, 1, ...) answers scenario.answers[n]
        # and record the k (and query, retriever) each call was given.
        ...
        assert decision.action == scenario.expected.action
        assert len(decision.attempts) == scenario.expected.attempts
        assert [r.attempt.k for r in decision.attempts] == scenario.expected.ks
        assert decision.answer == scenario.expected.answer

The chain must not score answers itself in these scenarios (the scripted scorer is
the only source of scores). ``scenario.chain_k`` is the chain's own retrieval depth
(pass it as ``k=`` where the wrapper takes it; no scenario's expected ks depend on it).
Scenarios with ``expected.attempts == 1`` also hold for one-shot checks
(``Guard.check``: callbacks, middleware, query-engine postprocessing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from semgrad_guard.errors import ScoringError

#: The scripted answer at each attempt: attempt n answers ANSWERS[n].
ANSWERS = ("Paris, I think", "Paris", "Paris, France", "Lyon")
QUESTION = "What is the capital of France?"
ABSTAIN_MESSAGE = "I don't know the answer to that."
PENDING_MESSAGE = "A reviewer will answer this shortly."


@dataclass
class ReviewCase:
    """What :class:`RecordingReviewQueue` stores for a submitted case."""

    id: str
    fields: dict[str, Any]


class RecordingReviewQueue:
    """A review queue stand-in: keeps submitted cases in a list."""

    def __init__(self) -> None:
        self.cases: list[ReviewCase] = []

    def submit(self, **fields: Any) -> ReviewCase:
        case = ReviewCase(id=f"case-{len(self.cases) + 1}", fields=fields)
        self.cases.append(case)
        return case


@dataclass(frozen=True)
class Expected:
    """The decision a scenario must end in.

    ``ks`` is the retrieval depth of every attempt in order (``None``: the chain's own);
    ``answer`` is what the chain returns; ``best`` is the index of the attempt the
    decision rests on; ``case`` says whether a review case is submitted.
    """

    action: str
    attempts: int
    ks: list[int | None]
    answer: str
    passed: bool
    best: int
    case: bool = False


@dataclass(frozen=True)
class Scenario:
    """A policy, the scores its attempts get, and the decision that must follow."""

    name: str
    description: str
    policy: dict[str, Any]
    scores: list[float | BaseException]
    expected: Expected
    answers: tuple[str, ...] = ANSWERS
    question: str = QUESTION
    chain_k: int | None = 4
    queries: list[str] | None = None
    retrievers: list[str | None] | None = None
    flags: tuple[str, ...] = field(default=())

    def review_queue(self) -> RecordingReviewQueue | None:
        """A fresh review queue for scenarios that escalate, else ``None``."""
        return RecordingReviewQueue() if self.expected.case else None


def _policy(*actions: Any, max_score: float = 0.5, **rule: Any) -> dict[str, Any]:
    return {"version": 1,
            "default": {"threshold": {"max_score": max_score}, "actions": list(actions), **rule}}


_RETRY_2 = {"type": "retry_with_retrieval", "attempts": 2, "k_schedule": [8, 16]}

SCENARIOS: list[Scenario] = [
    Scenario(
        name="pass",
        description="The first answer is under the threshold: it passes untouched.",
        policy=_policy(_RETRY_2, {"type": "abstain", "message": ABSTAIN_MESSAGE}),
        scores=[0.2],
        expected=Expected("pass", 1, [None], ANSWERS[0], passed=True, best=0),
    ),
    Scenario(
        name="pass_at_threshold",
        description="A score equal to max_score passes (at or under the threshold).",
        policy=_policy({"type": "abstain", "message": ABSTAIN_MESSAGE}),
        scores=[0.5],
        expected=Expected("pass", 1, [None], ANSWERS[0], passed=True, best=0),
    ),
    Scenario(
        name="abstain",
        description="Over the threshold with abstain as the only action: the message.",
        policy=_policy({"type": "abstain", "message": ABSTAIN_MESSAGE}),
        scores=[0.9],
        expected=Expected("abstain", 1, [None], ABSTAIN_MESSAGE, passed=False, best=0),
    ),
    Scenario(
        name="retry_then_pass",
        description="The first answer is uncertain; the first retry (k=8) passes.",
        policy=_policy(_RETRY_2, {"type": "abstain", "message": ABSTAIN_MESSAGE}),
        scores=[0.9, 0.3],
        expected=Expected("pass", 2, [None, 8], ANSWERS[1], passed=True, best=1),
    ),
    Scenario(
        name="retries_exhausted_then_abstain",
        description="Every attempt stays uncertain (k widened 4 -> 8 -> 16 by a multiplier "
                    "of 2); after the last retry the next action, abstain, applies.",
        policy=_policy({"type": "retry_with_retrieval", "attempts": 2, "base_k": 4,
                        "k_multiplier": 2.0,
                        "rewrite_query": "{question} Answer from the passages."},
                       {"type": "abstain", "message": ABSTAIN_MESSAGE}),
        scores=[0.9, 0.8, 0.7],
        expected=Expected("abstain", 3, [None, 8, 16], ABSTAIN_MESSAGE, passed=False, best=0),
        queries=[QUESTION, f"{QUESTION} Answer from the passages.",
                 f"{QUESTION} Answer from the passages."],
    ),
    Scenario(
        name="escalate",
        description="Over the threshold with escalate as the only action: a review case is "
                    "submitted and the chain returns the pending message.",
        policy=_policy({"type": "escalate", "pending_message": PENDING_MESSAGE}),
        scores=[0.9],
        expected=Expected("escalate", 1, [None], PENDING_MESSAGE, passed=False, best=0,
                          case=True),
    ),
    Scenario(
        name="retry_then_escalate",
        description="One retry on another retriever stays uncertain; the case escalates with "
                    "the chain's own answer (keep: first, the default).",
        policy=_policy({"type": "retry_with_retrieval", "attempts": 1, "k_schedule": [10],
                        "retrievers": ["bm25"]},
                       {"type": "escalate", "pending_message": PENDING_MESSAGE}),
        scores=[0.7, 0.95],
        expected=Expected("escalate", 2, [None, 10], PENDING_MESSAGE, passed=False, best=0,
                          case=True),
        retrievers=[None, "bm25"],
    ),
    Scenario(
        name="retries_exhausted_then_flag",
        description="In shadow mode (flag) the chain's own answer passes on, marked "
                    "passed=False: a retry that scores lower but stays over the threshold "
                    "does not replace it (keep: first).",
        policy=_policy(_RETRY_2, "flag"),
        scores=[0.9, 0.6, 0.8],
        expected=Expected("pass", 3, [None, 8, 16], ANSWERS[0], passed=False, best=0),
    ),
    Scenario(
        name="keep_best_score_then_flag",
        description="With keep: best_score the lowest-scoring attempt passes on, flagged.",
        policy=_policy(_RETRY_2, "flag", keep="best_score"),
        scores=[0.9, 0.6, 0.8],
        expected=Expected("pass", 3, [None, 8, 16], ANSWERS[1], passed=False, best=1),
    ),
    Scenario(
        name="keep_last_then_escalate",
        description="With keep: last the case escalates with the widest retrieval's answer.",
        policy=_policy({"type": "retry_with_retrieval", "attempts": 1, "k_schedule": [10]},
                       {"type": "escalate", "pending_message": PENDING_MESSAGE}, keep="last"),
        scores=[0.7, 0.95],
        expected=Expected("escalate", 2, [None, 10], PENDING_MESSAGE, passed=False, best=1,
                          case=True),
    ),
    Scenario(
        name="score_failure_fail_closed",
        description="The first score cannot be computed: fail closed treats it as uncertain, "
                    "so the retry runs and passes.",
        policy=_policy(_RETRY_2, {"type": "abstain", "message": ABSTAIN_MESSAGE}),
        scores=[ScoringError("scripted scoring failure"), 0.1],
        expected=Expected("pass", 2, [None, 8], ANSWERS[1], passed=True, best=1),
        flags=("score_failed",),
    ),
    Scenario(
        name="score_failure_fail_open",
        description="With fail_open a score that cannot be computed passes the answer, "
                    "flagged.",
        policy=_policy({"type": "abstain", "message": ABSTAIN_MESSAGE},
                       on_score_failure="fail_open"),
        scores=[ScoringError("scripted scoring failure")],
        expected=Expected("pass", 1, [None], ANSWERS[0], passed=False, best=0),
        flags=("score_failed", "fail_open"),
    ),
]

#: Scenarios by name.
BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


# -- one answer, one decision: the table every integration records alike -----------------------
@dataclass(frozen=True)
class DecisionCase:
    """One answer (``ANSWERS[0]`` to ``QUESTION``), the score it gets (or the scoring
    failure), and the rule that judges it.

    Every integration that decides on an answer must record the decision
    :meth:`Guard.check` makes on it (``action``, ``passed`` and ``flags`` say what that
    is), or raise what it raises (``action`` is ``None``: ``on_score_failure: raise``).
    """

    name: str
    policy: dict[str, Any]
    score: float | BaseException
    action: str | None
    passed: bool
    flags: tuple[str, ...] = ()

    def guard(self) -> Any:
        """A fresh guard: this case's rule, its scripted score, an audit trail and a
        review queue."""
        from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig
        from semgrad_guard.testing import ScriptedScorer

        score = self.score
        if isinstance(score, BaseException):  # a fresh error for every guard
            score = type(score)(*score.args)
        return Guard(PolicyConfig.from_dict(self.policy), scorer=ScriptedScorer([score]),
                     audit=AuditTrail(), review_queue=RecordingReviewQueue())

    def reference(self) -> list[tuple[Any, ...]]:
        """What ``Guard.check`` records for this case (raises what it raises)."""
        guard = self.guard()
        decision = guard.check(QUESTION, ANSWERS[0])
        assert (decision.action, decision.passed) == (self.action, self.passed)
        assert set(self.flags) <= set(decision.flags)
        return recorded(guard)

    def expected(self) -> list[tuple[Any, ...]]:
        """What a front end must record: what ``Guard.check`` records, and nothing for
        the ``raise`` row (whose check must raise the scoring error)."""
        try:
            return self.reference()
        except ScoringError:
            if self.action is not None:
                raise
            return []


def recorded(guard: Any) -> list[tuple[Any, ...]]:
    """A guard's audit records, as far as a decision goes (which rule, what was asked,
    answered, scored and decided, why, the review case, the flags)."""
    return [(r.chain, r.question, r.answer, r.chosen_answer, r.action, r.passed, r.method,
             r.score, r.case_id, r.reason, tuple(r.flags)) for r in guard.audit.records()]


_FAILURE = ScoringError("scripted scoring failure")

DECISIONS: list[DecisionCase] = [
    DecisionCase("pass", _policy({"type": "abstain", "message": ABSTAIN_MESSAGE}), 0.2,
                 "pass", True),
    DecisionCase("abstain", _policy({"type": "abstain", "message": ABSTAIN_MESSAGE}), 0.9,
                 "abstain", False),
    DecisionCase("escalate", _policy({"type": "escalate", "pending_message": PENDING_MESSAGE}),
                 0.9, "escalate", False),
    DecisionCase("flag", _policy("flag"), 0.9, "pass", False, ("uncertain",)),
    DecisionCase("fail_closed", _policy({"type": "abstain", "message": ABSTAIN_MESSAGE},
                                        on_score_failure="fail_closed"),
                 _FAILURE, "abstain", False, ("score_failed",)),
    DecisionCase("fail_open", _policy({"type": "abstain", "message": ABSTAIN_MESSAGE},
                                      on_score_failure="fail_open"),
                 _FAILURE, "pass", False, ("score_failed", "fail_open")),
    DecisionCase("raise", _policy({"type": "abstain", "message": ABSTAIN_MESSAGE},
                                  on_score_failure="raise"),
                 _FAILURE, None, False),
]
