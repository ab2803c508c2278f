"""semgrad-guard: sampling-free uncertainty guardrails for local LLMs.

Score an answer:

>>> from semgrad_guard import LocalModel, SemGradScorer
>>> scorer = SemGradScorer(LocalModel.load())
>>> generation, score = scorer.generate_and_score("What is the boiling point of water in Celsius?")
>>> score.value > 0   # higher = more uncertain
True

Decide on it under a policy:

>>> from semgrad_guard import Guard, PolicyConfig
>>> policy = PolicyConfig.from_dict({"version": 1, "default": {
...     "threshold": {"max_score": 1.0}, "actions": ["abstain"]}})
>>> decision = Guard(policy, scorer=scorer).check("Boiling point?", generation.text,
...                                               score=score)
>>> decision.action, decision.passed, decision.rule
('pass', True, 'default')
"""

from ._version import __version__
from .errors import (
    AbstainedError,
    CalibrationError,
    ConfigError,
    ContextWindowError,
    EmptyResponseError,
    EscalatedError,
    GradientAccessError,
    GuardOutcome,
    InvalidTextError,
    ModelLoadError,
    NonFiniteScoreError,
    ResponseTooLongError,
    ScoringError,
    SemGradGuardError,
    TokenizerMismatchError,
    UncertainAnswerError,
)
from .model import Generation, LocalModel, PromptFormat, qa_prompt
from .policy import (
    ActionContext,
    Attempt,
    AttemptResult,
    AuditTrail,
    Guard,
    GuardDecision,
    PolicyConfig,
    Rule,
    load_policy,
)
from .scoring import (
    SCORE_NAMES,
    ModelProfile,
    ProfileStore,
    Scorer,
    SemGradScorer,
    UncertaintyScore,
    model_fingerprint,
)

__all__ = [
    "SCORE_NAMES",
    "AbstainedError",
    "ActionContext",
    "Attempt",
    "AttemptResult",
    "AuditTrail",
    "CalibrationError",
    "ConfigError",
    "ContextWindowError",
    "EmptyResponseError",
    "EscalatedError",
    "Generation",
    "GradientAccessError",
    "Guard",
    "GuardDecision",
    "GuardOutcome",
    "InvalidTextError",
    "LocalModel",
    "ModelLoadError",
    "ModelProfile",
    "NonFiniteScoreError",
    "PolicyConfig",
    "ProfileStore",
    "PromptFormat",
    "ResponseTooLongError",
    "Rule",
    "Scorer",
    "ScoringError",
    "SemGradGuardError",
    "SemGradScorer",
    "TokenizerMismatchError",
    "UncertainAnswerError",
    "UncertaintyScore",
    "__version__",
    "load_policy",
    "model_fingerprint",
    "qa_prompt",
]
