"""The public surface of semgrad_guard.review, pinned, and its docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import semgrad_guard.review as review
from semgrad_guard.errors import ReviewError, SemGradGuardError

PUBLIC = [
    "AmbiguousCaseIdError", "CASE_STATUSES", "SIGNATURE_HEADER", "CaseAlreadyDecidedError", "CaseNotFoundError",
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
    for name in ("AmbiguousCaseIdError", "CaseAlreadyDecidedError", "CaseNotFoundError",
                 "DecisionTimeoutError",
                 "InvalidCaseError", "ReviewStoreError", "WebhookDeliveryError"):
        error = getattr(review, name)
        assert issubclass(error, ReviewError) and issubclass(error, SemGradGuardError)
    assert issubclass(review.DecisionTimeoutError, TimeoutError)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    loaded = importlib.import_module("semgrad_guard.review" + module)
    result = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_page_templates_ship_in_the_wheel(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(root / "semgrad_guard", source / "semgrad_guard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(source)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = tmp_path.glob("semgrad_guard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("base.html", "login.html", "list.html", "case.html", "message.html"):
        assert f"semgrad_guard/review/templates/{name}" in names
    assert "semgrad_guard/review/static/review.css" in names
    # No page is written as a Python string any more.
    assert "<html" not in (root / "semgrad_guard/review/pages.py").read_text()
