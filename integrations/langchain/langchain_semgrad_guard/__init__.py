"""LangChain integration of semgrad-guard: local Hugging Face chat models scored with
SemGrad, a scoring callback handler, policy-guarded chains and agent middleware.

>>> from langchain_semgrad_guard import ChatSemGrad, guard_chain
>>> chat = ChatSemGrad.load(max_new_tokens=16)
>>> guarded = guard_chain(chat, {"version": 1, "default": {
...     "threshold": {"max_score": 1.0}, "actions": ["abstain"]}})
>>> guarded.invoke("What is the chemical symbol of gold?").content != ""
True
"""

from .callbacks import ScoredGeneration, SemGradCallbackHandler
from .chat_models import ChatSemGrad
from .messages import score_from_metadata
from .middleware import (
    ReviewResumer,
    SemGradAgentState,
    SemGradMiddleware,
    resume_from_review,
    review_decision,
)
from .runnables import ATTEMPT_KEY, GuardedChain, guard_chain, widen_retrieval
from .served import check_chat_model
from .tool_calls import DEFAULT_TOOL_PROMPT, parse_tool_calls

__version__ = "0.1.0"

__all__ = [
    "ATTEMPT_KEY",
    "DEFAULT_TOOL_PROMPT",
    "ChatSemGrad",
    "GuardedChain",
    "ReviewResumer",
    "ScoredGeneration",
    "SemGradAgentState",
    "SemGradCallbackHandler",
    "SemGradMiddleware",
    "__version__",
    "check_chat_model",
    "guard_chain",
    "parse_tool_calls",
    "resume_from_review",
    "review_decision",
    "score_from_metadata",
    "widen_retrieval",
]
