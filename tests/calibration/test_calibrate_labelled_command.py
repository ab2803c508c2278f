"""``semgrad-guard calibrate --labelled --from-answers`` on a tiny model saved to a folder:
it scores the answers, fits, writes the profile, resumes from its answers folder, and
refuses degenerate data by name."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from semgrad_guard import SemGradScorer, qa_prompt
from semgrad_guard.cli import main
from semgrad_guard.scoring.profile import ModelProfile
from tests.core.tiny import WORDS, tiny_llama, tiny_local_model, tiny_tokenizer

QUESTION_WORDS = [w for w in WORDS if w.isalpha() and w.islower()]


@pytest.fixture(scope="module")
def model_and_answers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    lm = tiny_local_model()
    rng = random.Random(1)
    questions = [" ".join(rng.choices(QUESTION_WORDS, k=5)) + " ?" for _ in range(60)]
    generations = lm.generate_batch([qa_prompt(q) for q in questions], max_new_tokens=6)
    nll = [s.scores["nll_per_token"] for s in SemGradScorer(lm, profile=None).score_batch(
        [(g.prompt_ids, g.response_ids) for g in generations])]
    cut = sorted(nll)[len(nll) // 2]
    answers = folder / "answers.jsonl"
    answers.write_text("".join(json.dumps({
        "index": i, "question": q, "answer": g.text, "domain": "ab"[i % 2],
        "prompt_ids": list(g.prompt_ids), "response_ids": list(g.response_ids),
        "correct": value <= cut}) + "\n"
        for i, (q, g, value) in enumerate(zip(questions, generations, nll, strict=True))))
    return folder, answers


def test_the_command_scores_fits_writes_and_resumes(
        model_and_answers: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(tmp_path / "cache"))
    folder, answers = model_and_answers
    args = ["calibrate", "--labelled", "--model", str(folder), "--from-answers", str(answers),
            "--answers-dir", str(tmp_path / "runs"), "--output", str(tmp_path / "profile.json")]
    assert main(args) == 0
    out = capsys.readouterr()
    wrong = sum(not json.loads(line)["correct"] for line in answers.read_text().splitlines())
    assert f"60 labelled answers ({wrong} wrong) from a, b; judge given" in out.out
    assert "score labelled answers" in out.err  # the progress bar
    profile = ModelProfile.load(tmp_path / "profile.json")
    assert profile.learned is not None and profile.learned.n == 60
    assert min(profile.learned.cv_auroc["learned"].values()) > 0.8
    assert list((tmp_path / "cache" / "profiles").glob("*.json"))
    scored = (tmp_path / "runs" / "answers.scored.jsonl").read_text().splitlines()
    assert len(scored) == 61  # the settings line, then every scored answer
    # A second run reuses the scored answers: nothing is scored again.
    assert main(args) == 0
    assert "score labelled answers" not in capsys.readouterr().err


def test_degenerate_labels_are_refused_by_name(
        model_and_answers: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(tmp_path / "cache"))
    folder, answers = model_and_answers
    all_right = tmp_path / "all_right.jsonl"
    all_right.write_text("".join(json.dumps({**json.loads(line), "correct": True}) + "\n"
                                 for line in answers.read_text().splitlines()))
    assert main(["calibrate", "--labelled", "--model", str(folder),
                 "--from-answers", str(all_right)]) == 2
    assert "only 0 of 60 labelled answers are wrong" in capsys.readouterr().err
    assert main(["calibrate", "--labelled", "--model", str(folder)]) == 2
    assert "--labelled needs --data" in capsys.readouterr().err
