"""The public surface of semgrad_guard is deliberate, and every documented example of
the core runs (the review package's are run by tests/review)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import semgrad_guard

PUBLIC = [
    "SCORE_NAMES", "AbstainedError", "ActionContext", "Attempt", "AttemptResult",
    "AuditTrail", "CalibrationError", "ConfigError", "ContextWindowError",
    "EmptyResponseError", "EscalatedError", "Generation", "GradientAccessError", "Guard",
    "GuardDecision", "GuardOutcome", "InvalidTextError", "LocalModel", "ModelLoadError",
    "ModelProfile", "NonFiniteScoreError", "PolicyConfig", "ProfileStore", "PromptFormat",
    "ResponseTooLongError", "Rule", "Scorer", "ScoringError",
    "SemGradGuardError", "SemGradScorer", "TokenizerMismatchError", "UncertainAnswerError",
    "UncertaintyScore", "__version__", "load_policy", "model_fingerprint", "qa_prompt",
]

MODULES = ["semgrad_guard"] + sorted(
    m.name for m in pkgutil.walk_packages(semgrad_guard.__path__, "semgrad_guard.")
    if not m.name.startswith("semgrad_guard.review"))


def test_public_api_is_pinned() -> None:
    assert sorted(semgrad_guard.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(semgrad_guard, name) is not None


def test_the_public_names_are_the_layers_own() -> None:
    from semgrad_guard import policy, scoring

    assert semgrad_guard.Guard is policy.Guard and semgrad_guard.Rule is policy.Rule
    assert semgrad_guard.Scorer is scoring.Scorer is policy.Scorer


@pytest.mark.parametrize("module", MODULES)
def test_documented_examples_run(module: str) -> None:
    loaded = importlib.import_module(module)
    result = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_testing_module_ships_a_scripted_scorer() -> None:
    """semgrad_guard.testing is for users' own tests: a scorer that returns scripted
    scores, satisfying the Scorer protocol the guard takes."""
    from semgrad_guard import testing

    assert sorted(testing.__all__) == ["ScriptedScorer", "scripted_score"]
    assert isinstance(testing.ScriptedScorer([0.1]), semgrad_guard.Scorer)
