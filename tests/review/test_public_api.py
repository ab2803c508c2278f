"""The public surface of semgrad_guard.review, pinned, and its docstring examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import semgrad_guard.review as review
from semgrad_guard.errors import ReviewError, SemGradGuardError

PUBLIC = [
    "CASE_STATUSES", "SIGNATURE_HEADER", "CaseAlreadyDecidedError", "CaseNotFoundError",
    "CaseStatus", "DecisionCallback", "DecisionTimeoutError", "EscalatedCase",
    "InvalidCaseError", "PostgresReviewStore", "ReviewError", "ReviewQueue",
    "ReviewServer", "ReviewServerConfig", "ReviewStore", "ReviewStoreError",
    "SQLiteReviewStore", "WebhookConfig", "WebhookDeliveryError", "DELIVERY_HEADER",
    "TIMESTAMP_HEADER", "Delivery", "Redaction", "verify_signature",
    "create_review_app", "open_review_queue",
]

MODULES = ["", ".case", ".store", ".sqlite_store", ".queue", ".webhook", ".auth", ".web",
           ".redaction", ".terminal", ".files",
           ".server"]


def test_public_names_are_pinned() -> None:
    assert sorted(review.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(review, name) is not None


def test_errors_belong_to_the_one_tree() -> None:
    for name in ("CaseAlreadyDecidedError", "CaseNotFoundError", "DecisionTimeoutError",
                 "InvalidCaseError", "ReviewStoreError", "WebhookDeliveryError"):
        error = getattr(review, name)
        assert issubclass(error, ReviewError) and issubclass(error, SemGradGuardError)
    assert issubclass(review.DecisionTimeoutError, TimeoutError)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    loaded = importlib.import_module("semgrad_guard.review" + module)
    result = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
