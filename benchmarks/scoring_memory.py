"""Peak memory and time of scoring one answer, against the answer's length (default model).

Each length runs in a fresh process, so that its peak resident memory is its own: the
process loads the model, scores a short answer (warm-up), records its peak RSS, then
scores one answer of the given length with the default scorer (SemGrad, HybridGrad, every
feature) and reports how far the peak rose, and how long the pass took. A line fitted
through the points gives the bound documented for ``max_response_tokens``.

    OMP_NUM_THREADS=1 python benchmarks/scoring_memory.py [--lengths 64 256 ...]
        [--plot benchmarks/scoring_memory.png] [--json benchmarks/scoring_memory.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from semgrad_bench.resources import peak_rss_mib


def measure(length: int) -> dict[str, float]:
    """One length, in this process: rise of the peak RSS (MiB) and seconds of the pass."""
    from semgrad_guard import LocalModel, SemGradScorer, qa_prompt

    lm = LocalModel.load()
    scorer = SemGradScorer(lm, max_response_tokens=None)
    prompt = lm.prompt_ids(qa_prompt("Tell me everything you know about the history of "
                                     "astronomy."))
    words = lm.tokenizer(" The stars and planets move across the night sky, and people "
                         "have watched them for thousands of years.", add_special_tokens=False
                         )["input_ids"]
    scorer.score_batch([(prompt, words[:8] + [lm.tokenizer.eos_token_id])])  # warm-up
    before = peak_rss_mib()
    response = (words * (length // len(words) + 1))[: length - 1] + [lm.tokenizer.eos_token_id]
    start = time.perf_counter()
    scorer.score_batch([(prompt, response)])
    seconds = time.perf_counter() - start
    return {"tokens": length, "peak_rise_mib": peak_rss_mib() - before, "seconds": seconds,
            "baseline_mib": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[32, 128, 256, 512, 1024, 2048])
    parser.add_argument("--plot", help="write the curve to this PNG file")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child)))
        return

    rows = []
    for length in tqdm(args.lengths, desc="answer lengths"):
        out = subprocess.run([sys.executable, __file__, "--child", str(length)], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    tokens = np.array([r["tokens"] for r in rows], dtype=float)
    rise = np.array([r["peak_rise_mib"] for r in rows])
    slope, intercept = np.polyfit(tokens, rise, 1)
    print(f"\none answer scored by the default scorer (SemGrad + HybridGrad + every feature), "
          f"model and warm-up resident: {rows[0]['baseline_mib']:.0f} MiB\n")
    print(f"{'answer tokens':>14}{'peak rise MiB':>15}{'MiB / token':>13}{'seconds':>10}")
    for r in rows:
        print(f"{r['tokens']:>14}{r['peak_rise_mib']:>15.0f}"
              f"{r['peak_rise_mib'] / r['tokens']:>13.2f}{r['seconds']:>10.2f}")
    print(f"\nfit: peak rise = {intercept:.0f} MiB + {slope:.3f} MiB x answer tokens")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(tokens, rise, "o-", label="measured peak rise")
        ax.plot(tokens, intercept + slope * tokens, "--", label="linear fit")
        ax.set_xlabel("answer tokens")
        ax.set_ylabel("peak resident memory rise (MiB)")
        ax.set_title("Scoring memory vs answer length (SmolLM2-135M, CPU)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "fit": {"intercept_mib": intercept,
                                             "mib_per_token": slope}}, f, indent=2)


if __name__ == "__main__":
    main()
