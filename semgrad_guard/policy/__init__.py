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

from .attempts import Attempt, AttemptRecord, AttemptResult
from .audit import AuditRecord, AuditTrail
from .config import (
    AbstainAction,
    ChainPolicy,
    CustomAction,
    EscalateAction,
    FlagAction,
    MatchRule,
    PlattCalibration,
    PolicyConfig,
    RetryWithRetrievalAction,
    Threshold,
    load_policy,
)
from .decision import GuardAction, GuardDecision
from .guard import ActionContext, Guard, Scorer

__all__ = [
    "AbstainAction",
    "ActionContext",
    "Attempt",
    "AttemptRecord",
    "AttemptResult",
    "AuditRecord",
    "AuditTrail",
    "ChainPolicy",
    "CustomAction",
    "EscalateAction",
    "FlagAction",
    "Guard",
    "GuardAction",
    "GuardDecision",
    "MatchRule",
    "PlattCalibration",
    "PolicyConfig",
    "RetryWithRetrievalAction",
    "Scorer",
    "Threshold",
    "load_policy",
]
