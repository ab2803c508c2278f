"""The scorer on Ray: a Serve deployment with two replicas, and bulk re-scoring with Ray
Data, on a local cluster of two CPUs that these tests start and stop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from semgrad_guard import SemGradScorer, qa_prompt
from semgrad_guard.policy import AttemptResult, AuditTrail, Guard, PolicyConfig
from semgrad_guard.serving import RemoteScorer

pytestmark = pytest.mark.real_model

TOKEN = "a-long-random-scorer-token"
ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["What is the capital of France?", "What gas do plants take in?",
             "Who wrote Hamlet?", "What is the boiling point of water in Celsius?"]


# Serve gives its HTTP proxy 5 s to start and its health checks 10 s to answer; on a
# machine busy with other jobs (the test suite's own, say) that is too short.
PATIENT_SERVE = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
                 "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
                 "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "30"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    # Workers import this checkout's code, as the driver does.
    paths = [str(ROOT), str(ROOT / "integrations" / "langchain"),
             str(ROOT / "integrations" / "llama-index")]
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([previous] if previous else []))
    os.environ.update(PATIENT_SERVE)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                       **PATIENT_SERVE}})
    try:
        yield
    finally:
        ray.shutdown()
        for name in PATIENT_SERVE:
            os.environ.pop(name, None)
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def serve_port(cluster: None) -> Iterator[int]:
    """Ray Serve's HTTP proxy, started once: restarting Serve on a cluster races with
    the teardown of the previous proxy."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def answers(default_lm) -> list[tuple[list[dict[str, str]], str]]:
    generations = default_lm.generate_batch([qa_prompt(q) for q in QUESTIONS],
                                            max_new_tokens=12)
    return [(qa_prompt(q).chat_messages(), g.text)
            for q, g in zip(QUESTIONS, generations, strict=True)]


def test_serve_deployment_scores_like_the_local_scorer(serve_port: int,
                                                       default_scorer: SemGradScorer,
                                                       answers) -> None:
    from ray import serve

    from semgrad_guard.serving.ray_serve import scorer_app

    port = serve_port
    try:
        handle = serve.run(scorer_app(token=TOKEN, num_replicas=2, max_batch_size=8,
                                      batch_wait_timeout_s=0.2), name="scorer")
        url = f"http://127.0.0.1:{port}"
        with RemoteScorer(url, token=TOKEN) as remote:
            for prompt, text in answers:
                here = default_scorer.score_text(prompt, text)
                there = remote.score_text(prompt, text)
                assert there.retokenized and there.response_ids == here.response_ids
                assert there.scores == pytest.approx(here.scores, rel=1e-3)
            assert remote.identity().model == default_scorer.model.name
        assert httpx.post(f"{url}/v1/score", json={"items": []}).status_code == 401

        # Concurrent calls through the handle share @serve.batch passes.
        async def many() -> list[dict]:
            calls = [handle.score.remote({"messages": p, "answer": t}) for p, t in answers * 3]
            return list(await asyncio.gather(*calls))

        results = asyncio.run(many())
        assert all("score" in r for r in results)
        sizes = [size for _ in range(4) for size in handle.batch_sizes.remote().result()]
        assert max(sizes) > 1
    finally:
        serve.delete("scorer")


def test_bulk_rescoring_of_jsonl(cluster: None, tmp_path: Path,
                                                        default_scorer: SemGradScorer,
                                                        answers) -> None:
    from semgrad_guard.serving.bulk import rescore

    lines = [{"id": i, "messages": p, "answer": t, "correct": i % 2 == 0}
             for i, (p, t) in enumerate(answers)]
    exact = default_scorer.model.generate(qa_prompt(QUESTIONS[0]), max_new_tokens=12)
    lines.append({"id": "exact", "prompt_ids": list(exact.prompt_ids),
                  "response_ids": list(exact.response_ids)})
    lines.append({"id": "empty", "prompt_ids": list(exact.prompt_ids), "response_ids": []})
    source = tmp_path / "traffic.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))

    rows = rescore(source, num_actors=2, batch_size=2, output=tmp_path / "scored.jsonl")
    assert [r["id"] for r in rows] == [line["id"] for line in lines]
    for row, (prompt, text) in zip(rows, answers, strict=False):
        assert row["correct"] == (row["id"] % 2 == 0)  # fields pass through
        assert row["value"] == pytest.approx(default_scorer.score_text(prompt, text).value,
                                             rel=1e-3)
    assert rows[-2]["value"] == pytest.approx(default_scorer.score_generation(exact).value,
                                              rel=1e-3)
    assert rows[-2]["score"]["retokenized"] is False
    assert rows[-1]["value"] is None and rows[-1]["error"].startswith("EmptyResponseError")
    written = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [w["id"] for w in written] == [r["id"] for r in rows]


def test_audit_trail_records_rescore_to_their_recorded_scores(tmp_path: Path,
                                                              default_scorer: SemGradScorer,
                                                              answers) -> None:
    """What the pipeline's actors do with audit-trail records, without the cluster."""
    from semgrad_guard.serving.backend import ItemScorer
    from semgrad_guard.serving.bulk import _item, read_audit

    audit = AuditTrail(tmp_path / "audit.db")
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 1.0}, "actions": ["abstain"]}})
    guard = Guard(policy, scorer=default_scorer, audit=audit)
    for question, (_, text) in zip(QUESTIONS, answers, strict=True):
        guard.run(question, lambda attempt, text=text: AttemptResult(text))
    records = read_audit(tmp_path / "audit.db")
    assert [r["question"] for r in records] == QUESTIONS
    scores = ItemScorer(default_scorer).score_items([_item(r, "audit") for r in records])
    for record, score in zip(records, scores, strict=True):
        assert not isinstance(score, Exception) and score.retokenized
        assert score.value == pytest.approx(record["recorded_score"], rel=1e-4)


def test_ray_example(serve_port: int, default_scorer: SemGradScorer,
                     capsys: pytest.CaptureFixture[str]) -> None:
    from .test_examples import load_example

    example = load_example("ray_scale_out")
    result = example.main(port=serve_port)
    for score, record in zip(result["served"], example.TRAFFIC, strict=False):
        local = default_scorer.score_text(qa_prompt(record["question"]), record["answer"])
        assert score.value == pytest.approx(local.value, rel=1e-3)
    values = [row["value"] for row in result["rows"]]
    assert result["fit"].threshold in values and result["fit"].coverage >= 0.5
    out = capsys.readouterr().out
    assert "Ray Serve" in out and "re-scored 6 answers; refitted threshold" in out
