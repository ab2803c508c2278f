"""Throughput of the deployment topologies on the default model: answers scored per second.

Generates answers to SciQ calibration questions once, then scores them (every score, one
forward and one partial backward pass each) through:

- the scorer in process (``score_batch``, batches of 16), the reference;
- the scoring service (``serve-scorer`` in a thread), ``--clients`` concurrent clients
  sending one answer per request, so throughput comes from the service's micro-batching;
- Ray Serve with 1 and with 2 replicas, the same clients through Serve's HTTP proxy;
- the Ray Data bulk pipeline with 1 and with 2 scorer actors (actor start-up included).

Ray runs on a local cluster bounded to ``--cpus`` CPUs, one per replica or actor. All
figures come from one run; on a shared machine compare them with each other, not with
another run. Prints a table and writes it to ``--markdown`` (and ``--json``).

    python benchmarks/serving.py [--answers 64] [--clients 8] [--cpus 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.serving import RemoteScorer, ScorerServer, ScorerServiceConfig

TOKEN = "benchmark-token-of-good-length"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clients(url: str, pairs: list[tuple[Any, str]], n_clients: int, label: str) -> float:
    """Answers per second when ``n_clients`` threads send one answer per request."""
    queue = list(range(len(pairs)))
    lock = threading.Lock()
    bar = tqdm(total=len(pairs), desc=label)

    def work() -> None:
        with RemoteScorer(url, token=TOKEN, timeout=1800) as scorer:
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop()
                scorer.score_text(*pairs[i])
                bar.update()

    threads = [threading.Thread(target=work) for _ in range(n_clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bar.close()
    return len(pairs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "serving.md"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "serving.json"))
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    lm = LocalModel.load(device=args.device)
    scorer = SemGradScorer(lm)
    items = load_qa("sciq", split="calibration", limit=args.answers)
    prompts = [qa_prompt(item.question) for item in items]
    generations = [g for at in tqdm(range(0, len(prompts), 16), desc="generate answers")
                   for g in lm.generate_batch(prompts[at:at + 16], max_new_tokens=32)]
    pairs = [(p, g.text) for p, g in zip(prompts, generations, strict=True)]
    ids = [(lm.prompt_ids(p), lm.response_ids(t)) for p, t in pairs]
    figures: dict[str, float] = {}

    start = time.perf_counter()
    for at in tqdm(range(0, len(ids), 16), desc="in process"):
        scorer.score_batch(ids[at:at + 16])
    figures["in process (score_batch, 16 per batch)"] = len(ids) / (time.perf_counter() - start)

    config = ScorerServiceConfig(token=TOKEN, port=0, max_batch=16, max_wait_ms=10)
    with ScorerServer(scorer, config) as server:
        figures[f"scoring service, {args.clients} clients"] = clients(
            server.url, pairs, args.clients, "scoring service")
        sizes = server.metrics.batch_size.collect()[0].samples
        count = next(s.value for s in sizes if s.name.endswith("_count"))
        total = next(s.value for s in sizes if s.name.endswith("_sum"))
        figures["scoring service, mean batch"] = total / count

    if not args.skip_ray:
        import ray
        from ray import serve

        from semgrad_guard.serving.bulk import rescore
        from semgrad_guard.serving.ray_serve import scorer_app

        paths = [str(ROOT), str(ROOT / "integrations" / "langchain"),
                 str(ROOT / "integrations" / "llama-index")]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])
        # Patient proxy checks: Serve's 5 s to start a proxy is short on a busy machine.
        patient = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
                   "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}
        os.environ.update(patient)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                           **patient}})
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for replicas in (1, 2):
            serve.run(scorer_app(token=TOKEN, num_replicas=replicas, max_batch_size=16,
                                 batch_wait_timeout_s=0.01, device=args.device), name="scorer")
            url = f"http://127.0.0.1:{port}"
            clients(url, pairs[:4], 2, "warm up")
            figures[f"Ray Serve, {replicas} replica{'s' * (replicas > 1)}, {args.clients} "
                    f"clients"] = clients(url, pairs, args.clients, f"Ray Serve x{replicas}")
            serve.delete("scorer")
        serve.shutdown()
        records = [{"messages": p, "answer": t} for p, t in pairs]
        for actors in (1, 2):
            start = time.perf_counter()
            rescore(records, num_actors=actors, batch_size=16, device=args.device)
            figures[f"Ray Data bulk, {actors} actor{'s' * (actors > 1)} (start-up included)"] = \
                len(records) / (time.perf_counter() - start)
        ray.shutdown()

    load = os.getloadavg()
    lines = [f"# Serving throughput (answers per second, default model, {args.device})", "",
             f"{len(pairs)} SciQ calibration answers; {os.cpu_count()} CPUs "
             f"({platform.processor() or platform.machine()}), load average "
             f"{load[0]:.1f} at the end; Ray bounded to {args.cpus} CPUs.", "",
             "| topology | answers/s |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in figures.items()]
    lines += ["", f"`python benchmarks/serving.py --answers {args.answers} --clients "
                  f"{args.clients} --cpus {args.cpus} --device {args.device}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.markdown).write_text(text)
    Path(args.json).write_text(json.dumps({"figures": figures, "answers": len(pairs),
                                           "load_average": load,
                                           "python": sys.version.split()[0]}, indent=2))


if __name__ == "__main__":
    main()
