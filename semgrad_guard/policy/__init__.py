"""Policy: per-chain rules that turn an uncertainty score into pass, abstain, retry with
retrieval, or escalate, and the audit trail of every decision.

Framework-free: the LangChain and LlamaIndex integrations are thin shells over
:class:`Guard`.

>>> from semgrad_guard.policy import PolicyConfig, Guard
>>> policy = PolicyConfig.from_dict({"version": 1, "default": {
...     "threshold": {"max_score": 0.05}, "actions": ["abstain"]}})
>>> Guard(policy).rule_for(run_name="anything").name
'default'
"""

from .._deprecation import renamed_module_attributes
from .attempts import Attempt, AttemptRecord, AttemptResult
from .audit import AuditRecord, AuditTrail
from .config import (
    AbstainAction,
    CustomAction,
    EscalateAction,
    FlagAction,
    MatchRule,
    PlattCalibration,
    PolicyConfig,
    RetryWithRetrievalAction,
    Rule,
    Threshold,
    load_policy,
)
from .decision import GuardAction, GuardDecision, GuardedAnswer
from .guard import ActionContext, Guard, Scorer

#: ``ChainPolicy``, the old name of :class:`Rule`, still works for one release.
__getattr__ = renamed_module_attributes(__name__, {"ChainPolicy": ("Rule", Rule)})

__all__ = [
    "AbstainAction",
    "ActionContext",
    "Attempt",
    "AttemptRecord",
    "AttemptResult",
    "AuditRecord",
    "AuditTrail",
    "CustomAction",
    "EscalateAction",
    "FlagAction",
    "Guard",
    "GuardAction",
    "GuardDecision",
    "GuardedAnswer",
    "MatchRule",
    "PlattCalibration",
    "PolicyConfig",
    "RetryWithRetrievalAction",
    "Rule",
    "Scorer",
    "Threshold",
    "load_policy",
]
