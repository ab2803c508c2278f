"""semgrad-guard: sampling-free uncertainty guardrails for local LLMs.

>>> from semgrad_guard import LocalModel, SemGradScorer
>>> scorer = SemGradScorer(LocalModel.load())
>>> generation, score = scorer.generate_and_score("What is the boiling point of water in Celsius?")
>>> score.value > 0   # higher = more uncertain
True
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
    ModelLoadError,
    ScoringError,
    SemGradGuardError,
    TokenizerMismatchError,
    UncertainAnswerError,
)
from .model import Generation, LocalModel, PromptFormat, qa_prompt
from .scoring import (
    SCORE_NAMES,
    ModelProfile,
    ProfileStore,
    SemGradScorer,
    UncertaintyScore,
    model_fingerprint,
)

__all__ = [
    "SCORE_NAMES",
    "AbstainedError",
    "CalibrationError",
    "ConfigError",
    "ContextWindowError",
    "EmptyResponseError",
    "EscalatedError",
    "Generation",
    "GradientAccessError",
    "GuardOutcome",
    "LocalModel",
    "ModelLoadError",
    "ModelProfile",
    "ProfileStore",
    "PromptFormat",
    "ScoringError",
    "SemGradGuardError",
    "SemGradScorer",
    "TokenizerMismatchError",
    "UncertainAnswerError",
    "UncertaintyScore",
    "__version__",
    "model_fingerprint",
    "qa_prompt",
]
