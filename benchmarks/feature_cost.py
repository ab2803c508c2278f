"""What the pass's named features cost: the scoring pass with and without them, in one run.

On SciQ evaluation questions answered greedily by the default model, times the scoring of
the same answers (reusing generation's prompt caches, as a guarded chain does) by:

- ``before``: the scorer as it was before the pass gave features (its source read from
  git at ``--before``), when that revision still imports;
- ``anchor only``: this scorer with ``feature_offsets=()``, whose graph starts at the
  anchor as before;
- ``features``: the default scorer (every offset of the template's tail), whose graph
  starts at the earliest of them;
- ``features, recomputed``: the same pass computing the outputs of the linear layers
  above the lowest anchor layer instead of taking those generation kept;
- ``features, every block``: the same pass run through every block instead of from the
  hidden state generation kept at the lowest anchor layer (``scoring/upper.py``);
- ``features + hidden``: the default scorer with ``hidden_states=True`` (which runs every
  block: the probes read every layer).

One answer at a time (``score_generation``) and batched (``score_batch`` of 16),
for the default configuration (HybridGrad on) and for SemGrad alone (``hybrid=False``).
Scorers take turns on every answer, so that a noisy machine slows them alike; ratios are
medians of per-answer ratios (one at a time) and ratios of totals (batched). Times are
the process's CPU time (with one torch thread, the work done, whatever else the machine
runs), with wall-clock ratios beside them. It also compares the configured anchor's
scores of every scorer with the reference's: how many are identical, and the largest
relative difference (a pass that starts earlier rounds float32 differently).

    OMP_NUM_THREADS=1 python benchmarks/feature_cost.py [--questions 48] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt
from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.model.clock import describe

#: The last revision whose scorer computed no features.
BEFORE_FEATURES = "d300332"


def scorer_before(revision: str) -> type | None:
    """``SemGradScorer`` as it was at ``revision``, loaded beside this one."""
    try:
        source = subprocess.run(["git", "show", f"{revision}:semgrad_guard/scoring/semgrad.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(no 'before' scorer: cannot read revision {revision}: {exc})")
        return None
    path = Path(tempfile.mkdtemp()) / "semgrad_before.py"
    path.write_text(source)
    name = "semgrad_guard.scoring._semgrad_before"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        print(f"(no 'before' scorer: revision {revision} no longer imports here: {exc})")
        return None
    return module.SemGradScorer  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--before", default=BEFORE_FEATURES,
                        help="git revision of the scorer without features ('' to skip)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    lm = LocalModel.load(device=args.device)
    old = scorer_before(args.before) if args.before else None
    items = load_qa("sciq", split="evaluation", limit=args.questions)
    prompts = [qa_prompt(item.question) for item in items]

    configs: dict[str, dict[str, Any]] = {}
    for hybrid in (True, False):
        group = "default (HybridGrad on)" if hybrid else "SemGrad alone (hybrid=False)"
        scorers: dict[str, Any] = {}
        if old is not None:
            scorers["before"] = old(lm, hybrid=hybrid)
        scorers["anchor only"] = SemGradScorer(lm, hybrid=hybrid, feature_offsets=())
        scorers["features"] = SemGradScorer(lm, hybrid=hybrid)
        # The same pass computing the linear layers' outputs generation kept, and run
        # through every block, as before it started from generation's hidden state at
        # the lowest anchor layer.
        scorers["features, recomputed"] = SemGradScorer(lm, hybrid=hybrid)
        scorers["features, recomputed"]._given_outputs = False
        scorers["features, every block"] = SemGradScorer(lm, hybrid=hybrid)
        scorers["features, every block"]._upper = False
        scorers["features + hidden"] = SemGradScorer(lm, hybrid=hybrid, hidden_states=True)
        configs[group] = scorers
    reference = "before" if old is not None else "anchor only"

    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    single: dict[str, dict[str, dict[str, list[float]]]] = {
        c: {g: {n: [] for n in s} for g, s in configs.items()} for c in clocks}
    batched = {c: {g: dict.fromkeys(s, 0.0) for g, s in configs.items()} for c in clocks}
    identical: dict[str, int] = {}
    compared: dict[str, int] = {}
    largest: dict[str, float] = {}
    tokens = []
    for lo in tqdm(range(0, len(prompts), 16), desc="generate and score"):
        generations = lm.generate_batch(prompts[lo:lo + 16], max_new_tokens=args.max_new_tokens)
        tokens += [len(g.response_ids) for g in generations]
        for group, scorers in configs.items():
            names = list(scorers)
            for turn in range(2):  # both orders: no scorer always runs first
                order = names if turn == 0 else names[::-1]
                for name in order:
                    start = {c: clock() for c, clock in clocks.items()}
                    scorers[name].score_batch(generations, release=False)
                    for c, clock in clocks.items():
                        batched[c][group][name] += (clock() - start[c]) / 2
            for i, generation in enumerate(generations):
                order = names[i % len(names):] + names[:i % len(names)]
                results = {}
                for name in order:
                    start = {c: clock() for c, clock in clocks.items()}
                    results[name] = scorers[name].score_generation(generation, release=False)
                    for c, clock in clocks.items():
                        single[c][group][name].append(clock() - start[c])
                for name, result in results.items():
                    for key, value in results[reference].scores.items():
                        compared[name] = compared.get(name, 0) + 1
                        identical[name] = identical.get(name, 0) + (result.scores[key] == value)
                        change = abs(result.scores[key] - value) / max(abs(value), 1e-30)
                        largest[name] = max(largest.get(name, 0.0), change)
        for generation in generations:
            if generation.prefix_cache is not None:
                generation.prefix_cache.release()

    print(f"\ndefault model, {len(tokens)} SciQ evaluation answers (median "
          f"{statistics.median(tokens)} tokens), torch {torch.__version__}, {describe(lm.device)}")
    print(f"scored reusing generation's prompt caches; CPU seconds, ratios against "
          f"'{reference}' (CPU time; wall-clock time beside it)\n")
    for group in configs:
        print(f"{group}")
        print(f"  {'scorer':<20}{'one at a time':>14}{'ratio':>7}{'(wall)':>8}"
              f"{'batched /answer':>17}{'ratio':>7}{'(wall)':>8}")
        for name in configs[group]:
            ratios = {}
            for c in clocks:
                ref = single[c][group][reference]
                ratios[c] = statistics.median(
                    t / r for t, r in zip(single[c][group][name], ref, strict=True))
                ratios["batched " + c] = batched[c][group][name] / batched[c][group][reference]
            print(f"  {name:<20}{statistics.median(single['cpu'][group][name]):>13.3f}s"
                  f"{ratios['cpu']:>7.3f}{ratios['wall']:>8.3f}"
                  f"{batched['cpu'][group][name] / len(tokens):>16.3f}s"
                  f"{ratios['batched cpu']:>7.3f}{ratios['batched wall']:>8.3f}")
        print()
    print(f"scores of the configured anchor against '{reference}' (one at a time, both "
          f"configurations):")
    for name in compared:
        if name != reference:
            print(f"  {name:<20}{identical[name]:>4} of {compared[name]} identical, largest "
                  f"relative difference {largest[name]:.2g}")


if __name__ == "__main__":
    main()
