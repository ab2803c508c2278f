"""The deployment examples run as the README shows them: a model server with an
in-process scorer, and a shared scoring service started from the command line."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from .llama_server import free_port, wait_until_serving

pytestmark = pytest.mark.real_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOKEN = "a-long-random-scorer-token"


def load_example(name: str) -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # as `python examples/<name>.py` has it
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_decisions(example: ModuleType, decisions: list[Any]) -> None:
    threshold = example.POLICY["default"]["threshold"]["max_score"]
    passed, abstained = decisions
    assert passed.action == "pass" and "Leonardo" in passed.answer
    assert passed.value < threshold / 1.5  # the documented margin
    assert abstained.action == "abstain" and abstained.value > threshold * 1.5
    assert abstained.chosen_answer.strip().lower() == "golden"
    assert all(not d.score.retokenized for d in decisions)  # the server's own tokens


def test_served_model_example(served_default_model: str, default_lm: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("served_model")
    check_decisions(example, example.main(served_default_model, default_lm))
    out = capsys.readouterr().out
    assert "'chat_template': 'agrees'" in out and "PASS" in out and "ABSTAIN" in out


@pytest.fixture()
def scorer_service(tmp_path: Path) -> Iterator[str]:
    """``semgrad-guard serve-scorer`` as a separate process, as the README starts it."""
    port = free_port()
    env = {**os.environ, "SEMGRAD_GUARD_SCORER_TOKEN": TOKEN, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "serve-scorer.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "semgrad_guard.cli", "serve-scorer",
                                    "--port", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, f"{url}/healthz", log, timeout=300)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert re.search(r"scoring SmolLM2-135M-Instruct on http://127\.0\.0\.1:\d+",
                     log.read_text())


def test_scorer_service_example(served_default_model: str, scorer_service: str,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEMGRAD_GUARD_SCORER_TOKEN", TOKEN)
    example = load_example("scorer_service")
    check_decisions(example, example.main(served_default_model, scorer_service))
    assert "scoring service: {'status': 'ok'" in capsys.readouterr().out
    metrics = httpx.get(f"{scorer_service}/metrics",
                        headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'semgrad_scorer_answers_total{kind="served"} 2.0' in metrics


def test_the_readme_shows_the_examples_as_they_are() -> None:
    """Each code block of the README's deployment section is cut from the example it
    names (the command lines from its docstring), which the tests run."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deployment"):readme.index("## Layout")]
    parts = re.split(r"From\s+`(examples/\w+\.py)`:", section)
    blocks = 0
    for name, text in zip(parts[1::2], parts[2::2], strict=True):
        source = [line.strip() for line in (ROOT / name).read_text().splitlines()]
        for block in re.findall(r"```(?:python|bash)\n(.*?)```", text, flags=re.S):
            lines = [line.strip() for line in block.strip().splitlines()]
            assert any(source[at:at + len(lines)] == lines for at in range(len(source))), \
                f"{name} does not hold:\n{block}"
            blocks += 1
    assert blocks == 6
