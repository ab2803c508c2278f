"""The one exception tree of semgrad-guard.

::

    SemGradGuardError
    ├── ConfigError                 bad policy file, unknown key, bad value
    │   └── ProfileVersionError     a model profile of a format this version cannot read
    ├── ModelLoadError              a model or tokenizer that cannot be loaded
    │   ├── GGUFConversionError     a GGUF file transformers cannot de-quantize
    │   └── ServedModelMismatchError  a served model that is not the scorer's model
    ├── ModelClosedError            a request to a model that was closed
    ├── ScoringError                a (prompt, response) pair that cannot be scored
    │   ├── EmptyResponseError      the response has no content (no answer)
    │   ├── ContextWindowError      prompt + response exceed the model's context window
    │   ├── ResponseTooLongError    the response is longer than the scorer's maximum
    │   ├── NonFiniteScoreError     the pass produced a NaN or infinite value
    │   ├── GradientAccessError     the model gives no gradient access (no torch module,
    │   │                           no decoder blocks, inference mode)
    │   ├── TokenizerMismatchError  a tokenizer that is not the model's (special tokens,
    │   │                           vocabulary fingerprint, ids outside the embedding)
    │   └── RemoteScoringError      the scoring service could not be reached or refused
    │       └── ServiceVersionError the service's wire format is older than the request's
    ├── CalibrationError            the anchor search or a threshold fit cannot run
    │   └── DegenerateDataError     labelled data a fit cannot learn from (one class, ...)
    ├── ReviewError                 the human review queue cannot do what was asked
    │   ├── CaseNotFoundError       no escalated case has that id (or id prefix)
    │   ├── AmbiguousCaseIdError    an id prefix fits several cases; lists them
    │   ├── CaseAlreadyDecidedError the case was already approved, edited or rejected
    │   ├── DecisionTimeoutError    no reviewer decided before the wait timed out
    │   ├── InvalidCaseError        a case to escalate has a bad field (NaN score, ...)
    │   ├── ReviewStoreError        the queue's database cannot be opened or reached
    │   └── WebhookDeliveryError    a decision webhook kept failing (decision stands)
    ├── AuditError                  the audit trail could not record a decision; carries it
    └── GuardOutcome                outcomes a caller must handle; carry the decision
        ├── UncertainAnswerError    strict mode: an answer scored above its threshold
        ├── AbstainedError          the policy abstained and is configured to raise
        └── EscalatedError          the case went to a human reviewer

One warning, for a setting that is likely wrong but cannot be proven so::

    ConfigWarning (UserWarning)     e.g. a guarded chain whose models cannot be seen
"""

from __future__ import annotations

from typing import Any


class SemGradGuardError(Exception):
    """Base class of every error raised by semgrad-guard."""


class ConfigError(SemGradGuardError, ValueError):
    """A configuration (policy file, model profile, option) is invalid."""


class ConfigWarning(UserWarning):
    """A configuration is likely wrong, but cannot be checked to be (it may be meant)."""


class ProfileVersionError(ConfigError):
    """A model profile was written in a format version this library cannot read."""


class ModelLoadError(SemGradGuardError):
    """A model or tokenizer could not be loaded."""


class InvalidTextError(SemGradGuardError, ValueError):
    """Text given to the model cannot be tokenised: it is not a ``str``, or it is not
    valid Unicode (a lone surrogate, named with its position)."""


class GGUFConversionError(ModelLoadError):
    """A GGUF file could not be de-quantized; ``architecture`` names its architecture."""

    def __init__(self, message: str, architecture: str | None = None) -> None:
        super().__init__(message)
        self.architecture = architecture


class ServedModelMismatchError(ModelLoadError):
    """A model server's tokenizer or chat template differs from the scorer's model."""


class ModelClosedError(SemGradGuardError, RuntimeError):
    """A request reached a model (or its batcher) after it was closed."""


class ScoringError(SemGradGuardError):
    """A (prompt, response) pair could not be scored."""


class EmptyResponseError(ScoringError, ValueError):
    """The response to score has no content: no tokens, or only whitespace, newlines and
    special tokens. The model gave no answer, and an empty answer is never scored."""


class ContextWindowError(ScoringError, ValueError):
    """The prompt and response do not fit in the model's context window."""


class ResponseTooLongError(ScoringError, ValueError):
    """The response has more tokens than the scorer's ``max_response_tokens``."""


class NonFiniteScoreError(ScoringError, ArithmeticError):
    """The scoring pass produced a NaN or an infinite value (named in the message)."""


class GradientAccessError(ScoringError):
    """The model does not give the gradient access SemGrad needs."""


class TokenizerMismatchError(ScoringError, ValueError):
    """The tokenizer is not the model's: its special tokens disagree with the model's
    configuration, its vocabulary differs from the one a profile was calibrated with, or
    it produces ids that the model's embedding cannot hold."""


class RemoteScoringError(ScoringError):
    """The scoring service could not be reached, refused the token, or failed;
    ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceVersionError(RemoteScoringError):
    """The scoring service speaks an older wire format than the request needs (a
    service before wire version 2 cannot take a question in its model's prompt format)."""


class CalibrationError(SemGradGuardError):
    """The anchor search or a threshold fit could not run."""


class DegenerateDataError(CalibrationError, ValueError):
    """Labelled data a fit cannot learn from: too few answers, one class only, a domain
    without both classes, or non-finite features."""


class ReviewError(SemGradGuardError):
    """The human review queue could not do what was asked."""


class CaseNotFoundError(ReviewError, KeyError):
    """No escalated case has the given id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousCaseIdError(ReviewError, LookupError):
    """A case id prefix fits several cases; ``matches`` lists (up to ten of) their ids."""

    def __init__(self, message: str, matches: Any = ()) -> None:
        super().__init__(message)
        self.matches = list(matches)


class CaseAlreadyDecidedError(ReviewError):
    """The case was already decided; ``case`` holds the decision that won."""

    def __init__(self, message: str, case: Any = None) -> None:
        super().__init__(message)
        self.case = case


class DecisionTimeoutError(ReviewError, TimeoutError):
    """No reviewer decided the case before the wait timed out; ``case`` is still pending."""

    def __init__(self, message: str, case: Any = None) -> None:
        super().__init__(message)
        self.case = case


class InvalidCaseError(ReviewError, ValueError):
    """A case to escalate has a field the queue cannot store faithfully."""


class ReviewStoreError(ReviewError):
    """The review queue's database could not be opened, reached or migrated."""


class WebhookDeliveryError(ReviewError):
    """A decision webhook could not be delivered; the decision itself is recorded."""


class AuditError(SemGradGuardError):
    """The audit trail could not record a decision; ``decision`` holds it (and its case id)."""

    def __init__(self, message: str, decision: Any = None) -> None:
        super().__init__(message)
        self.decision = decision


class GuardOutcome(SemGradGuardError):
    """An outcome the caller must handle; ``decision`` carries what was decided."""

    def __init__(self, message: str, decision: Any = None) -> None:
        super().__init__(message)
        self.decision = decision

    @property
    def score(self) -> Any:
        """The :class:`~semgrad_guard.UncertaintyScore` behind the decision, if any."""
        return getattr(self.decision, "score", None)


class UncertainAnswerError(GuardOutcome):
    """Strict mode: an answer's uncertainty was above its threshold."""


class AbstainedError(GuardOutcome):
    """The policy abstained from answering and is configured to raise."""


class EscalatedError(GuardOutcome):
    """The case was escalated to a human reviewer and is pending."""
