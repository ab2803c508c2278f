"""Several processes start at once against one empty cache folder: the default model is
converted once, nobody deletes what another is loading, profiles are never read half
written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from semgrad_guard.paths import cached_folder

ROOT = Path(__file__).resolve().parents[2]


def run_at_once(script: str, n: int, env: dict[str, str], timeout: float = 900
                ) -> list[dict[str, object]]:
    """Start ``n`` Python processes running ``script`` together; their JSON outputs."""
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "integrations/langchain"), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=full_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


BUILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from semgrad_guard.paths import cached_folder

    root = Path(os.environ["ROOT"])
    def build(folder):
        with open(root / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        for i in range(20):  # slow enough for the others to arrive meanwhile
            (folder / f"part{i}").write_text(str(os.getpid()))
            time.sleep(0.01)
        (folder / "done").write_text(str(os.getpid()))
    folder = cached_folder(root / "thing", build, lambda f: (f / "done").is_file())
    parts = {(folder / f"part{i}").read_text() for i in range(20)}
    print(json.dumps({"builder": (folder / "done").read_text(), "parts": sorted(parts)}))
""")


def test_a_cached_folder_is_built_once_by_processes_starting_together(tmp_path: Path) -> None:
    outputs = run_at_once(BUILD, 4, {"ROOT": str(tmp_path)}, timeout=300)
    builders = (tmp_path / "builds.log").read_text().split()
    assert len(builders) == 1
    assert all(o == {"builder": builders[0], "parts": [builders[0]]} for o in outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing.lock", "builds.log", "thing"]


def test_a_build_cut_short_is_cleaned_up_and_an_incomplete_folder_replaced(
        tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "half").write_text("left by a crash")
    stale = tmp_path / ".thing.build-crashed"
    stale.mkdir()

    def build(folder: Path) -> None:
        (folder / "done").write_text("ok")

    def fail(folder: Path) -> None:
        (folder / "part").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        cached_folder(tmp_path / "other", fail, lambda f: (f / "done").is_file())
    assert not (tmp_path / "other").exists()
    assert not list(tmp_path.glob(".other.build-*"))
    cached_folder(target, build, lambda f: (f / "done").is_file())
    assert sorted(p.name for p in target.iterdir()) == ["done"]
    assert not stale.exists()
    # A complete folder is used as it is, never rebuilt.
    cached_folder(target, fail, lambda f: (f / "done").is_file())


FIRST_USE = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from semgrad_guard import LocalModel, ModelProfile, ProfileStore, SemGradScorer

    me = int(sys.argv[1])
    lm = LocalModel.load()
    generation = lm.generate("What is the chemical symbol of gold?", max_new_tokens=12)
    store = ProfileStore()
    shared = ModelProfile(model_name="shared", model_fingerprint="f" * 16,
                          template_fingerprint="t" * 16, anchor_offset=-1, layers=(3,),
                          sps={f"-1,{i}": 0.5 for i in range(200)})
    for round in range(40):  # every process rewrites the same profile while reading it
        store.save(ModelProfile(**{**shared.__dict__, "anchor_token": f"{me}-{round}"}))
        found = store.find(shared.model_fingerprint, shared.template_fingerprint)
        assert found is not None and found.sps == shared.sps, found
    score = SemGradScorer(lm, profile=None).score_generation(generation)
    print(json.dumps({"text": generation.text, "ids": list(generation.response_ids),
                      "semgrad": score.value}))
""")


@pytest.mark.real_model
def test_first_use_in_several_processes_against_an_empty_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    outputs = run_at_once(FIRST_USE, 3, {"SEMGRAD_GUARD_CACHE": str(cache),
                                         "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert "Au" in str(outputs[0]["text"])
    assert all(o == outputs[0] for o in outputs)
    models = cache / "models"
    assert sorted(p.name for p in models.iterdir()) == [".SmolLM2-135M-Instruct.lock",
                                                        "SmolLM2-135M-Instruct"]
    assert [p.name for p in (cache / "profiles").glob("*.json")] == ["f" * 16 + "-" + "t" * 16
                                                                   + ".json"]
