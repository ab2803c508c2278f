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
another run. Prints a table and writes it to ``--output`` (``serving.md`` and
``serving.json``) after every step, so a run cut short keeps the figures it measured.

    python benchmarks/serving.py [--answers 32] [--clients 4] [--cpus 2] [--device cpu]
                                 [--max-new-tokens 16] [--output benchmarks/results/serving]
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

from pydantic import SecretStr
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


class Report:
    """The figures so far, written out after every step."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures: dict[str, float] = {}
        self.notes: list[str] = []
        self.output = Path(args.output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.answers = 0
        self.started = time.perf_counter()

    def add(self, name: str, value: float) -> None:
        self.figures[name] = value
        self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.write()

    def command(self) -> str:
        a = self.args
        return (f"python benchmarks/serving.py --answers {a.answers} --clients {a.clients} "
                f"--cpus {a.cpus} --device {a.device} --max-new-tokens {a.max_new_tokens}"
                + (" --skip-ray" if a.skip_ray else ""))

    def write(self) -> str:
        load = os.getloadavg()
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        lines = [f"# Serving throughput (answers per second, default model, {self.args.device})",
                 "", f"{self.answers} SciQ calibration answers (greedy, up to "
                 f"{self.args.max_new_tokens} new tokens); {os.cpu_count()} CPUs "
                 f"({platform.processor() or platform.machine()}), OMP_NUM_THREADS={threads}, "
                 f"load average {load[0]:.1f} when written; Ray bounded to {self.args.cpus} "
                 f"CPUs, one per replica or actor; {self.args.clients} concurrent clients, "
                 f"one answer per request.", "",
                 "| topology | answers/s |", "|---|---|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in self.figures.items()]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        lines += ["", f"`{self.command()}` ({time.perf_counter() - self.started:.0f} s wall)"]
        text = "\n".join(lines) + "\n"
        (self.output / "serving.md").write_text(text)
        (self.output / "serving.json").write_text(json.dumps(
            {"figures": self.figures, "notes": self.notes, "answers": self.answers,
             "command": self.command(), "load_average": load, "omp_num_threads": threads,
             "cpus": os.cpu_count(), "python": sys.version.split()[0]}, indent=2) + "\n")
        return text


def timed(label: str) -> float:
    print(f"[{time.strftime('%H:%M:%S')}] {label}", flush=True)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="longest answer generated (the answers are then scored)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "serving"))
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    report = Report(args)

    timed("load the model")
    lm = LocalModel.load(device=args.device)
    scorer = SemGradScorer(lm)
    items = load_qa("sciq", split="calibration", limit=args.answers)
    prompts = [qa_prompt(item.question) for item in items]
    generations = [g for at in tqdm(range(0, len(prompts), 16), desc="generate answers")
                   for g in lm.generate_batch(prompts[at:at + 16],
                                              max_new_tokens=args.max_new_tokens)]
    pairs = [(p, g.text) for p, g in zip(prompts, generations, strict=True)]
    ids = [(lm.prompt_ids(p), lm.response_ids(t)) for p, t in pairs]
    report.answers = len(pairs)
    report.note(f"mean answer length {sum(len(r) for _, r in ids) / len(ids):.1f} tokens, "
                f"mean prompt length {sum(len(p) for p, _ in ids) / len(ids):.1f} tokens")

    scorer.score_batch(ids[:1])  # warm up, as the served topologies are
    start = timed("in process")
    for at in tqdm(range(0, len(ids), 16), desc="in process"):
        scorer.score_batch(ids[at:at + 16])
    report.add("in process (score_batch, 16 per batch)", len(ids) / (time.perf_counter() - start))

    timed("scoring service")
    config = ScorerServiceConfig(token=SecretStr(TOKEN), port=0, max_batch=16, max_wait_ms=10)
    with ScorerServer(scorer, config) as server:
        rate = clients(server.url, pairs, args.clients, "scoring service")
        sizes = list(server.metrics.batch_size.collect())[0].samples
        count = next(s.value for s in sizes if s.name.endswith("_count"))
        total = next(s.value for s in sizes if s.name.endswith("_sum"))
        report.add(f"scoring service, {args.clients} clients", rate)
        report.note(f"scoring service: {total / count:.1f} answers per batched pass on average")

    if not args.skip_ray:
        ray_topologies(args, pairs, report)
    print(report.write())


def ray_topologies(args: argparse.Namespace, pairs: list[tuple[Any, str]],
                   report: Report) -> None:
    import ray
    from ray import serve

    from semgrad_guard.serving.bulk import rescore
    from semgrad_guard.serving.ray_serve import scorer_app

    paths = [str(ROOT), str(ROOT / "integrations" / "langchain"),
             str(ROOT / "integrations" / "llama-index")]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])
    # Patient proxy checks: Serve's 5 s to start a proxy is short on a busy machine.
    patient = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
               "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
               "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "30"}
    os.environ.update(patient)
    start = timed("start Ray")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                       **patient}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    report.note(f"Ray and Serve start-up: {time.perf_counter() - start:.0f} s (not counted)")
    url = f"http://127.0.0.1:{port}"
    for replicas in (1, 2):
        name = f"Ray Serve, {replicas} replica{'s' * (replicas > 1)}, {args.clients} clients"
        start = timed(f"deploy {replicas} replica(s)")
        serve.run(scorer_app(token=TOKEN, num_replicas=replicas, max_batch_size=16,
                             batch_wait_timeout_s=0.01, device=args.device), name="scorer")
        clients(url, pairs[:4], 2, "warm up")
        report.note(f"{name}: deployment and warm-up {time.perf_counter() - start:.0f} s "
                    f"(not counted)")
        timed(name)
        report.add(name, clients(url, pairs, args.clients, f"Ray Serve x{replicas}"))
        serve.delete("scorer")
    serve.shutdown()
    records = [{"messages": p.chat_messages(), "answer": t} for p, t in pairs]
    for actors in (1, 2):
        start = timed(f"bulk, {actors} actor(s)")
        rescore(records, num_actors=actors, batch_size=16, device=args.device)
        seconds = time.perf_counter() - start
        name = f"Ray Data bulk, {actors} actor{'s' * (actors > 1)}"
        report.add(f"{name} (start-up included)", len(records) / seconds)
        report.note(f"{name}: {seconds:.0f} s wall for {len(records)} answers, each actor "
                    f"loading its model included")
    ray.shutdown()


if __name__ == "__main__":
    main()
