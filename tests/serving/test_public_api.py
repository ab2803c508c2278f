"""The serving package's public surface is deliberate; Ray and llama.cpp stay optional."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import semgrad_guard.serving as serving

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = ["TOKEN_ENV", "RemoteScorer", "ScorerServer", "ScorerServiceConfig", "ServedAnswer",
          "ServedModelCheck", "check_served_model", "create_scorer_app", "score_served",
          "served_generation"]


def test_public_api_is_pinned() -> None:
    assert sorted(serving.__all__) == sorted(PUBLIC)


def test_importing_serving_imports_no_heavy_optional_package() -> None:
    code = ("import sys, semgrad_guard.serving, semgrad_guard.serving.ray_serve, "
            "semgrad_guard.serving.bulk; "
            "print(sorted(m for m in ('ray', 'llama_cpp', 'langchain_openai', 'prometheus_client')"
            " if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.strip() == "[]"


def test_a_missing_ray_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from semgrad_guard.errors import ConfigError
    from semgrad_guard.serving.ray_serve import scorer_app

    monkeypatch.setitem(sys.modules, "ray.serve", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r'pip install "ray\[serve,data\]==2.60.0"'):
        scorer_app(token="a-long-random-scorer-token")
