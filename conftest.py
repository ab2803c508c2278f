"""Fixtures shared by every test folder: the real default model, loaded once."""

from __future__ import annotations

import os

import pytest

# A real PostgreSQL server (session-wide) and a fresh schema on it, for every test folder.
from tests.postgres import postgres_server, postgres_url  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_lm():
    """The offline default model (SmolLM2-135M-Instruct), shared by the whole run."""
    from semgrad_guard import LocalModel

    return LocalModel.load()


@pytest.fixture(scope="session")
def default_scorer(default_lm):
    """A SemGrad scorer on the default model, with the cached profile if there is one."""
    from semgrad_guard import SemGradScorer

    return SemGradScorer(default_lm)
