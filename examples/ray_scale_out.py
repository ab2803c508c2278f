"""Scale out on Ray: the scorer as a Ray Serve deployment, and bulk re-scoring of logged
traffic with Ray Data to refit a threshold.

On a cluster, ``ray.init(address="auto")`` joins it; without one this starts a local
cluster of ``--cpus`` CPUs. Each replica and each bulk actor loads the model once.

    python examples/ray_scale_out.py [--cpus 2]
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

import ray
from ray import serve

from semgrad_guard import qa_prompt
from semgrad_guard.calibration.thresholds import threshold_for_coverage
from semgrad_guard.serving import RemoteScorer
from semgrad_guard.serving.bulk import rescore
from semgrad_guard.serving.ray_serve import scorer_app

TOKEN = "example-token-change-me-please"

#: Logged production answers, labelled by reviewers.
TRAFFIC = [
    {"question": "What is the capital of France?", "answer": "Paris", "correct": True},
    {"question": "Who painted the Mona Lisa?", "answer": "Leonardo da Vinci", "correct": True},
    {"question": "What is the chemical symbol of gold?", "answer": "Au", "correct": True},
    {"question": "What is the chemical symbol of gold?", "answer": "golden", "correct": False},
    {"question": "How many legs does a spider have?", "answer": "Eight", "correct": True},
    {"question": "How many legs does a spider have?", "answer": "Seventeen", "correct": False},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(cpus: int = 2, port: int | None = None) -> dict[str, Any]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=cpus, include_dashboard=False)
    try:
        # Ray Serve: two replicas behind Serve's HTTP proxy, dynamic batching per replica.
        # (On a cluster whose Serve already listens, start() keeps the running proxy.)
        port = port or free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(scorer_app(token=TOKEN, num_replicas=2), name="scorer")
        with RemoteScorer(f"http://127.0.0.1:{port}", token=TOKEN) as scorer:
            served = [scorer.score_text(qa_prompt(r["question"]), r["answer"])
                      for r in TRAFFIC[:2]]
        serve.delete("scorer")
        for record, score in zip(TRAFFIC, served, strict=False):
            print(f"Ray Serve  {score.value:.4f}  {record['question']} -> {record['answer']}")

        # Ray Data: re-score the logged answers with a pool of two scorer actors (each
        # question asked as qa_prompt asks it, in the model's own prompt format), then
        # refit the threshold on them: pass half of the traffic.
        rows = rescore(TRAFFIC, num_actors=2, batch_size=2)
        fit = threshold_for_coverage([r["value"] for r in rows], 0.5,
                                     [r["correct"] for r in rows])
        print(f"re-scored {len(rows)} answers; refitted threshold {fit.threshold:.4f} passes "
              f"{fit.coverage:.0%} with an error rate of {fit.error_rate:.0%}")
        return {"served": served, "rows": rows, "fit": fit}
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ray Serve and Ray Data with semgrad-guard")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--port", type=int, default=None, help="Serve's HTTP port")
    options = parser.parse_args()
    main(options.cpus, options.port)
