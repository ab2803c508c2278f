"""Escalation to a human: a durable review queue, reviewer tools, decisions flowing back.

>>> from semgrad_guard.review import open_review_queue
>>> queue = open_review_queue("sqlite:///:memory:")
>>> case = queue.submit(chain="support-rag", question="Refund window?", answer="30 days",
...                     score=0.0012)
>>> queue.approve(case.id, reviewer="alice").final_answer
'30 days'

Reviewers use ``semgrad-guard review list|show|approve|edit|reject|serve`` or the review
page (``ReviewServer``); the storage is SQLite by default, PostgreSQL by URL, or any
``ReviewStore``.
"""

import importlib
from typing import Any

from ..errors import (
    AmbiguousCaseIdError,
    CaseAlreadyDecidedError,
    CaseNotFoundError,
    DecisionTimeoutError,
    InvalidCaseError,
    ReviewError,
    ReviewStoreError,
    WebhookDeliveryError,
)
from .case import CASE_STATUSES, CaseStatus, EscalatedCase
from .queue import DecisionCallback, ReviewQueue, open_review_queue
from .redaction import Redaction
from .sqlite_store import SQLiteReviewStore
from .store import Delivery, ReviewStore
from .webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfig,
    verify_signature,
)

# The page needs starlette, uvicorn and jinja2, PostgreSQL needs psycopg: imported on
# first use, so that escalating to the SQLite queue needs none of them.
_LAZY = {
    "PostgresReviewStore": ("postgres_store", "psycopg[binary]"),
    "ReviewServer": ("server", "starlette uvicorn jinja2 python-multipart"),
    "ReviewServerConfig": ("server", "starlette uvicorn jinja2 python-multipart"),
    "create_review_app": ("web", "starlette uvicorn jinja2 python-multipart"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, packages = _LAZY[name]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"semgrad_guard.review.{name} needs: pip install {packages}", name=exc.name
        ) from exc
    return getattr(module, name)


__all__ = [
    "AmbiguousCaseIdError",
    "CASE_STATUSES",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "CaseAlreadyDecidedError",
    "CaseNotFoundError",
    "CaseStatus",
    "DecisionCallback",
    "DecisionTimeoutError",
    "Delivery",
    "EscalatedCase",
    "InvalidCaseError",
    "PostgresReviewStore",
    "Redaction",
    "ReviewError",
    "ReviewQueue",
    "ReviewServer",
    "ReviewServerConfig",
    "ReviewStore",
    "ReviewStoreError",
    "SQLiteReviewStore",
    "WebhookConfig",
    "WebhookDeliveryError",
    "create_review_app",
    "open_review_queue",
    "verify_signature",
]
