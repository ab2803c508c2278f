"""Speed and memory of SemGrad scoring on the default model, against generation.

Prints, for SciQ questions: the median time to generate an answer plainly (a model that
keeps nothing for scoring), what each SemGrad path adds to it (from what generation kept:
the prompt's keys and values, the hidden state at the lowest anchor layer and the linear
layers' outputs above it, keeping included; the same recomputing the linear layers, and
through every block; scored while generating, the fused path; from the ids alone), their
ratios to generation, the same 16 answers at a time, the throughput of batched scoring,
the bytes each path's graph keeps for its backward pass and generation keeps for
scoring, a profile of what remains of the default path and of the fused path, and peak
memory. All figures come from one run, so the ratios are comparable even on a noisy
machine.

    python benchmarks/speed.py [--questions 32] [--single 32] [--throughput 1,8,32]
                               [--device cpu|cuda] [--clock wall|cpu] [--json out.json]
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
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time each step by the wall clock (default) or by the process's "
                             "CPU time: with one torch thread, the work done, whatever else "
                             "the machine runs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    lm = LocalModel.load(device=args.device)
    rss_loaded = peak_rss_mib()
    # The same weights behind a model no scorer asked to keep anything: plain generation,
    # the denominator of every ratio.
    plain = LocalModel(lm.model, lm.tokenizer, prompt_format=lm.prompt_format, name=lm.name)
    semgrad = SemGradScorer(lm, hybrid=False)
    hybrid = SemGradScorer(lm, method="hybridgrad")
    # The same pass computing the linear layers' outputs again (the default before
    # generation kept them), and through every block (before it kept the hidden state at
    # the lowest anchor layer).
    recomputing = SemGradScorer(lm, hybrid=False)
    recomputing._given_outputs = False
    every_block = SemGradScorer(lm, hybrid=False)
    every_block._upper = False
    items = load_qa("sciq", split="evaluation", limit=args.questions)

    rows = []
    for model in (lm, plain):  # warm-up
        model.generate(qa_prompt(items[0].question), max_new_tokens=4)
    semgrad.generate_and_score(qa_prompt(items[0].question), fused=True, max_new_tokens=4)
    for item in tqdm(items[:args.single], desc="generate and score"):
        prompt = qa_prompt(item.question)
        # Generation with and without keeping what scoring reuses, alternated twice.
        plain_s, keeping_s = [], []
        for _ in range(2):
            plain_s.append(timed(plain.generate, prompt, max_new_tokens=args.max_new_tokens)[0])
            seconds, generation = timed(lm.generate, prompt, max_new_tokens=args.max_new_tokens)
            keeping_s.append(seconds)
        t_plain, t_keeping = statistics.mean(plain_s), statistics.mean(keeping_s)
        t_every_block = timed(every_block.score_generation, generation, release=False)[0]
        t_recomputing = timed(recomputing.score_generation, generation, release=False)[0]
        t_cached = timed(semgrad.score_generation, generation)[0]
        pair = (generation.prompt_ids, generation.response_ids)
        t_ids = timed(semgrad.score_batch, [pair])[0]
        t_hybrid = timed(hybrid.score_batch, [pair])[0]
        t_fused, (fused_generation, _) = timed(semgrad.generate_and_score, prompt, fused=True,
                                               max_new_tokens=args.max_new_tokens)
        t_hybrid_fused = timed(hybrid.generate_and_score, prompt, fused=True,
                               max_new_tokens=args.max_new_tokens)[0]
        assert fused_generation.response_ids == generation.response_ids
        keeping = t_keeping - t_plain
        # Every path's cost is what it adds to generating the same answer plainly: the
        # paths that score a kept generation pay for its keeping as well.
        rows.append({"tokens": len(generation.response_ids), "generate": t_plain,
                     "keeping": keeping, "pass": t_cached,
                     "semgrad_cached": keeping + t_cached,
                     "semgrad_cached_recomputing": keeping + t_recomputing,
                     "semgrad_cached_every_block": keeping + t_every_block,
                     "semgrad_fused": t_fused - t_plain,
                     "hybridgrad_fused": t_hybrid_fused - t_plain,
                     "semgrad": t_ids, "hybridgrad": t_hybrid, "pair": pair})
    rss_single = peak_rss_mib()

    paths = ("keeping", "pass", "semgrad_cached", "semgrad_cached_recomputing",
             "semgrad_cached_every_block", "semgrad_fused", "hybridgrad_fused", "semgrad",
             "hybridgrad")
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
    # reusing what generation kept or from the ids alone.
    prompts = [qa_prompt(item.question) for item in items]
    batched = dict.fromkeys(("generate", "keeping", "pass", "semgrad_cached", "semgrad_cached_recomputing",
                             "semgrad_cached_every_block", "semgrad_fused", "semgrad"), 0.0)
    for lo in tqdm(range(0, len(prompts), 16), desc="batched"):
        chunk = prompts[lo:lo + 16]
        plain_s, keeping_s = [], []
        for _ in range(2):
            plain_s.append(timed(plain.generate_batch, chunk,
                                 max_new_tokens=args.max_new_tokens)[0])
            seconds, generations = timed(lm.generate_batch, chunk,
                                         max_new_tokens=args.max_new_tokens)
            keeping_s.append(seconds)
        t_plain = statistics.mean(plain_s)
        keeping = statistics.mean(keeping_s) - t_plain
        batched["generate"] += t_plain
        batched["keeping"] += keeping
        batched["semgrad_cached_every_block"] += keeping + timed(
            every_block.score_batch, generations, release=False)[0]
        batched["semgrad_cached_recomputing"] += keeping + timed(
            recomputing.score_batch, generations, release=False)[0]
        t_pass = timed(semgrad.score_batch, generations, release=False)[0]
        batched["pass"] += t_pass
        batched["semgrad_cached"] += keeping + t_pass
        batched["semgrad"] += timed(semgrad.score_batch,
                                    [(g.prompt_ids, g.response_ids) for g in generations])[0]
        batched["semgrad_fused"] += timed(semgrad.generate_and_score_batch, chunk, fused=True,
                                          max_new_tokens=args.max_new_tokens)[0] - t_plain

    # What each path's graph keeps for its backward pass, on the longest answer (called
    # in this thread: the hooks that see saved tensors are per thread, and one-answer
    # calls run on the model's batching thread).
    longest = max(rows, key=lambda r: r["tokens"])
    graph_mib = {
        "two_pass": saved_mib(lambda: semgrad.score_batch([longest["pair"]])),
        "fused": saved_mib(lambda: semgrad.generate_and_score_batch(
            [prompt_of(lm, items, longest["pair"][0])], fused=True,
            max_new_tokens=args.max_new_tokens))}

    # What remains of the default path and of the fused path: one batch of 16, profiled.
    generations = lm.generate_batch(prompts[:16], max_new_tokens=args.max_new_tokens)
    kept_mib = (generations[0].prefix_cache.kept_bytes()
                if generations[0].prefix_cache is not None else 0) / 2**20
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("score_batch (kept generations)"):
            semgrad.score_batch(generations)
    default_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("generate_and_score_batch (fused)"):
            semgrad.generate_and_score_batch(prompts[:16], fused=True,
                                             max_new_tokens=args.max_new_tokens)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)

    names = {
        "keeping": "  of which generation keeping",
        "pass": "  of which the pass",
        "semgrad_cached": "SemGrad, from what generation kept",
        "semgrad_cached_recomputing": "  the same, linear layers recomputed",
        "semgrad_cached_every_block": "  the same, through every block",
        "semgrad_fused": "SemGrad, scored while generating",
        "hybridgrad_fused": "HybridGrad, scored while generating",
        "semgrad": "SemGrad, from ids",
        "hybridgrad": "HybridGrad (+ baselines), from ids"}
    order = ("semgrad_cached", "keeping", "pass", "semgrad_cached_recomputing",
             "semgrad_cached_every_block", "semgrad_fused", "hybridgrad_fused", "semgrad",
             "hybridgrad")
    print(f"\ndefault model, {len(rows)} SciQ questions, torch {torch.__version__}, "
          f"{describe(lm.device)}, {args.clock} clock")
    print(f"median answer length: {statistics.median(r['tokens'] for r in rows)} tokens\n")
    print(f"{'one answer at a time':<38}{'median s':>10}{'x generation':>14}")
    print(f"{'generate (greedy), nothing kept':<38}{med['generate']:>10.3f}{1:>14.2f}")
    for key in order:
        print(f"{names[key]:<38}{med[key]:>10.3f}{ratio[key]:>14.2f}")
    print("\n(x generation: median over answers of the per-answer ratio. Each path's time is "
          "what it adds to a plain generation of the same answer: the paths that score a "
          "kept generation include the keeping (noisy: the difference of two generations), "
          "the fused path is its call less the plain generation; medians of the parts need "
          "not add up)\n")
    per = {k: v / len(prompts) for k, v in batched.items()}
    print(f"{'batched, 16 at a time':<38}{'s / answer':>10}{'x generation':>14}")
    print(f"{'generate_batch (greedy), nothing kept':<38}{per['generate']:>10.3f}{1:>14.2f}")
    for key in order:
        if key in per:
            print(f"{names[key]:<38}{per[key]:>10.3f}{per[key] / per['generate']:>14.2f}")
    print(f"\n{'batch':>6}{'answers/s':>12}")
    for batch, rate in throughput.items():
        print(f"{batch:>6}{rate:>12.2f}")
    print(f"\ngraph kept for the backward pass, longest answer ({longest['tokens']} tokens): "
          f"{graph_mib['two_pass']:.1f} MiB two-pass, {graph_mib['fused']:.1f} MiB fused")
    print(f"kept by generation for scoring (hidden state and linear layers' outputs), "
          f"16 answers: {kept_mib:.1f} MiB")
    print("\nwhat remains of SemGrad from what generation kept, 16 answers at a time "
          "(torch.profiler):")
    print(default_table)
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
                       "graph_mib": graph_mib, "kept_by_generation_mib": kept_mib,
                       "longest_answer_tokens": longest["tokens"],
                       "peak_gpu_mib": gpu_mib, "hardware": describe(lm.device),
                       "questions": len(rows), "clock": args.clock}, f, indent=2)


#: The clock of :func:`timed` (``--clock``).
CLOCK: Callable[[], float] = time.perf_counter


def timed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds ``run(*args, **kwargs)`` took by :data:`CLOCK`, and what it returned."""
    t0 = CLOCK()
    out = run(*args, **kwargs)
    return CLOCK() - t0, out


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
