"""The one exception tree of semgrad-guard.

::

    SemGradGuardError
    ├── ConfigError                 bad policy file, unknown key, bad value
    ├── ModelLoadError              a model or tokenizer that cannot be loaded
    ├── ScoringError                a (prompt, response) pair that cannot be scored
    │   ├── EmptyResponseError      the response has no tokens
    │   ├── ContextWindowError      prompt + response exceed the model's context window
    │   ├── GradientAccessError     the model gives no gradient access (no torch module,
    │   │                           no decoder blocks, inference mode)
    │   └── TokenizerMismatchError  token ids the model's embedding cannot hold
    ├── CalibrationError            the anchor search or a threshold fit cannot run
    └── GuardOutcome                outcomes a caller must handle; carry the decision
        ├── UncertainAnswerError    strict mode: an answer scored above its threshold
        ├── AbstainedError          the policy abstained and is configured to raise
        └── EscalatedError          the case went to a human reviewer
"""

from __future__ import annotations

from typing import Any


class SemGradGuardError(Exception):
    """Base class of every error raised by semgrad-guard."""


class ConfigError(SemGradGuardError, ValueError):
    """A configuration (policy file, model profile, option) is invalid."""


class ModelLoadError(SemGradGuardError):
    """A model or tokenizer could not be loaded."""


class ScoringError(SemGradGuardError):
    """A (prompt, response) pair could not be scored."""


class EmptyResponseError(ScoringError, ValueError):
    """The response to score has no tokens."""


class ContextWindowError(ScoringError, ValueError):
    """The prompt and response do not fit in the model's context window."""


class GradientAccessError(ScoringError):
    """The model does not give the gradient access SemGrad needs."""


class TokenizerMismatchError(ScoringError, ValueError):
    """The tokenizer produces ids that the model's embedding cannot hold."""


class CalibrationError(SemGradGuardError):
    """The anchor search or a threshold fit could not run."""


class GuardOutcome(SemGradGuardError):
    """An outcome the caller must handle; ``decision`` carries what was decided."""

    def __init__(self, message: str, decision: Any = None) -> None:
        super().__init__(message)
        self.decision = decision


class UncertainAnswerError(GuardOutcome):
    """Strict mode: an answer's uncertainty was above its threshold."""


class AbstainedError(GuardOutcome):
    """The policy abstained from answering and is configured to raise."""


class EscalatedError(GuardOutcome):
    """The case was escalated to a human reviewer and is pending."""
