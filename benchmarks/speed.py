"""Speed and memory of SemGrad scoring on the default model, against generation.

Prints, for SciQ questions: the median time to generate an answer, to score it with
SemGrad and with HybridGrad (scored while generating, the fused path; reusing the
generation's prompt cache, as a guarded chain does; and from the ids alone), their
ratios to generation, the same 16 answers at a time, the throughput of batched scoring,
the bytes each path's graph keeps for its backward pass, a profile of what the fused
path adds to generation, and peak memory. All figures come from one run, so the ratios
are comparable even on a noisy machine.

    python benchmarks/speed.py [--questions 32] [--single 32] [--throughput 1,8,32]
                               [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from tqdm.auto import tqdm

from semgrad_bench.resources import peak_rss_mib
from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.model.clock import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--single", type=int, default=None, metavar="N",
                        help="answers timed one at a time (default: every question)")
    parser.add_argument("--throughput", default="1,8,32", metavar="SIZES",
                        help="batch sizes of the scoring throughput table ('' for none)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    lm = LocalModel.load(device=args.device)
    rss_loaded = peak_rss_mib()
    semgrad = SemGradScorer(lm, hybrid=False)
    hybrid = SemGradScorer(lm, method="hybridgrad")
    # The same pass through every block, as before it started from the hidden state
    # generation kept at the lowest anchor layer (scoring/upper.py).
    every_block = SemGradScorer(lm, hybrid=False)
    every_block._upper = False
    items = load_qa("sciq", split="evaluation", limit=args.questions)

    rows = []
    lm.generate(qa_prompt(items[0].question), max_new_tokens=4)  # warm-up
    semgrad.generate_and_score(qa_prompt(items[0].question), fused=True, max_new_tokens=4)
    for item in tqdm(items[:args.single], desc="generate and score"):
        prompt = qa_prompt(item.question)
        t0 = time.perf_counter()
        generation = lm.generate(prompt, max_new_tokens=args.max_new_tokens)
        t1 = time.perf_counter()
        every_block.score_generation(generation, release=False)
        t1b = time.perf_counter()
        semgrad.score_generation(generation)  # reuses the generation's prompt cache
        t2 = time.perf_counter()
        semgrad.score_batch([(generation.prompt_ids, generation.response_ids)])[0]
        t3 = time.perf_counter()
        hybrid.score_batch([(generation.prompt_ids, generation.response_ids)])[0]
        t4 = time.perf_counter()
        fused_generation, _ = semgrad.generate_and_score(prompt, fused=True,
                                                         max_new_tokens=args.max_new_tokens)
        t5 = time.perf_counter()
        hybrid.generate_and_score(prompt, fused=True, max_new_tokens=args.max_new_tokens)
        t6 = time.perf_counter()
        assert fused_generation.response_ids == generation.response_ids
        # The fused path's cost is what it adds to generating the same answer.
        rows.append({"tokens": len(generation.response_ids), "generate": t1 - t0,
                     "semgrad_cached_every_block": t1b - t1,
                     "semgrad_fused": t5 - t4 - (t1 - t0),
                     "hybridgrad_fused": t6 - t5 - (t1 - t0),
                     "semgrad_cached": t2 - t1b, "semgrad": t3 - t2, "hybridgrad": t4 - t3,
                     "pair": (generation.prompt_ids, generation.response_ids)})
    rss_single = peak_rss_mib()

    paths = ("semgrad_fused", "hybridgrad_fused", "semgrad_cached", "semgrad_cached_every_block",
             "semgrad", "hybridgrad")
    med = {k: statistics.median(r[k] for r in rows) for k in ("generate", *paths)}
    ratio = {k: statistics.median(r[k] / r["generate"] for r in rows) for k in paths}

    pairs = [r["pair"] for r in rows]
    while len(pairs) < 64:
        pairs = pairs + pairs
    throughput = {}
    for batch in [int(b) for b in args.throughput.split(",") if b.strip()]:
        scorer = SemGradScorer(lm, hybrid=False, batch_size=batch)
        work = pairs[: max(32, batch * 2)]
        scorer.score_batch(work[:batch])  # warm-up
        t0 = time.perf_counter()
        scorer.score_batch(work)
        throughput[batch] = len(work) / (time.perf_counter() - t0)
    rss_batched = peak_rss_mib()

    # Batched, as the benchmark runs: generate 16 answers at a time, then score them all,
    # reusing generation's keys and values or from the ids alone.
    prompts = [qa_prompt(item.question) for item in items]
    batched = {"generate": 0.0, "semgrad_fused": 0.0, "semgrad_cached": 0.0,
               "semgrad_cached_every_block": 0.0, "semgrad": 0.0}
    for lo in tqdm(range(0, len(prompts), 16), desc="batched"):
        t0 = time.perf_counter()
        generations = lm.generate_batch(prompts[lo:lo + 16], max_new_tokens=args.max_new_tokens)
        t1 = time.perf_counter()
        every_block.score_batch(generations, release=False)
        t1b = time.perf_counter()
        semgrad.score_batch(generations, release=False)
        t2 = time.perf_counter()
        semgrad.score_batch([(g.prompt_ids, g.response_ids) for g in generations])
        t3 = time.perf_counter()
        semgrad.generate_and_score_batch(prompts[lo:lo + 16], fused=True,
                                         max_new_tokens=args.max_new_tokens)
        t4 = time.perf_counter()
        batched["generate"] += t1 - t0
        batched["semgrad_cached_every_block"] += t1b - t1
        batched["semgrad_cached"] += t2 - t1b
        batched["semgrad"] += t3 - t2
        batched["semgrad_fused"] += t4 - t3 - (t1 - t0)

    # What each path's graph keeps for its backward pass, on the longest answer (called
    # in this thread: the hooks that see saved tensors are per thread, and one-answer
    # calls run on the model's batching thread).
    longest = max(rows, key=lambda r: r["tokens"])
    graph_mib = {
        "two_pass": saved_mib(lambda: semgrad.score_batch([longest["pair"]])),
        "fused": saved_mib(lambda: semgrad.generate_and_score_batch(
            [prompt_of(lm, items, longest["pair"][0])], fused=True,
            max_new_tokens=args.max_new_tokens))}

    # What remains of the fused path: one batch of 16, profiled.
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("generate_and_score_batch (fused)"):
            semgrad.generate_and_score_batch(prompts[:16], fused=True,
                                             max_new_tokens=args.max_new_tokens)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)

    print(f"\ndefault model, {len(rows)} SciQ questions, torch {torch.__version__}, "
          f"{describe(lm.device)}")
    print(f"median answer length: {statistics.median(r['tokens'] for r in rows)} tokens\n")
    print(f"{'step':<34}{'median s':>10}{'x generation':>14}")
    print(f"{'generate (greedy)':<34}{med['generate']:>10.3f}{1:>14.2f}")
    print(f"{'SemGrad, scored while generating':<34}{med['semgrad_fused']:>10.3f}"
          f"{ratio['semgrad_fused']:>14.2f}")
    print(f"{'HybridGrad, scored while generating':<34}{med['hybridgrad_fused']:>10.3f}"
          f"{ratio['hybridgrad_fused']:>14.2f}")
    print(f"{'SemGrad, reusing the prompt cache':<34}{med['semgrad_cached']:>10.3f}"
          f"{ratio['semgrad_cached']:>14.2f}")
    print(f"{'  the same, through every block':<34}{med['semgrad_cached_every_block']:>10.3f}"
          f"{ratio['semgrad_cached_every_block']:>14.2f}")
    print(f"{'SemGrad, from ids':<34}{med['semgrad']:>10.3f}{ratio['semgrad']:>14.2f}")
    print(f"{'HybridGrad (+ baselines), from ids':<34}{med['hybridgrad']:>10.3f}"
          f"{ratio['hybridgrad']:>14.2f}")
    print("\n(x generation: median over answers of the per-answer ratio; scored while "
          "generating: the fused call's time less the plain generation's)\n")
    per = {k: v / len(prompts) for k, v in batched.items()}
    print(f"{'batched, 16 at a time':<34}{'s / answer':>10}{'x generation':>14}")
    print(f"{'generate_batch (greedy)':<34}{per['generate']:>10.3f}{1:>14.2f}")
    print(f"{'SemGrad, scored while generating':<34}{per['semgrad_fused']:>10.3f}"
          f"{per['semgrad_fused'] / per['generate']:>14.2f}")
    print(f"{'SemGrad, reusing the prompt caches':<34}{per['semgrad_cached']:>10.3f}"
          f"{per['semgrad_cached'] / per['generate']:>14.2f}")
    print(f"{'  the same, through every block':<34}{per['semgrad_cached_every_block']:>10.3f}"
          f"{per['semgrad_cached_every_block'] / per['generate']:>14.2f}")
    print(f"{'SemGrad, from ids':<34}{per['semgrad']:>10.3f}"
          f"{per['semgrad'] / per['generate']:>14.2f}\n")
    print(f"{'batch':>6}{'answers/s':>12}")
    for batch, rate in throughput.items():
        print(f"{batch:>6}{rate:>12.2f}")
    print(f"\ngraph kept for the backward pass, longest answer ({longest['tokens']} tokens): "
          f"{graph_mib['two_pass']:.1f} MiB two-pass, {graph_mib['fused']:.1f} MiB fused")
    print("\nwhat the fused path spends, 16 answers at a time (torch.profiler):")
    print(table)
    print(f"\npeak RSS: {rss_loaded:.0f} MiB after load, {rss_single:.0f} MiB after "
          f"single scoring, {rss_batched:.0f} MiB after batch 32")
    gpu_mib = None
    if lm.device.type == "cuda":
        gpu_mib = torch.cuda.max_memory_allocated(lm.device) / 2**20
        print(f"peak GPU memory allocated: {gpu_mib:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median_seconds": med, "ratio_to_generation": ratio,
                       "batched_seconds_per_answer": per,
                       "answers_per_second": throughput,
                       "peak_rss_mib": {"loaded": rss_loaded, "single": rss_single,
                                        "batched": rss_batched},
                       "graph_mib": graph_mib, "longest_answer_tokens": longest["tokens"],
                       "peak_gpu_mib": gpu_mib, "hardware": describe(lm.device),
                       "questions": len(rows)}, f, indent=2)


def saved_mib(run: Callable[[], object]) -> float:
    """MiB of the distinct tensors autograd saves for backward while ``run`` runs."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), int(t.storage_offset()))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values()) / 2**20


def prompt_of(lm: LocalModel, items: list[Any], prompt_ids: Sequence[int]) -> Any:
    """The question prompt whose ids are ``prompt_ids``."""
    for item in items:
        if lm.prompt_ids(qa_prompt(item.question)) == list(prompt_ids):
            return qa_prompt(item.question)
    raise LookupError("no question has these prompt ids")


if __name__ == "__main__":
    main()
