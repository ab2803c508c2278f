"""Print the README's headline table from the committed summaries.

    .venv/bin/python benchmarks/summary_table.py benchmarks/results/smollm2-135m-instruct
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from semgrad_guard.evaluation.report import METHOD_LABELS

DATASETS = ("sciq", "truthfulqa")


def main(root: str) -> None:
    summaries = {}
    for name in DATASETS:
        path = Path(root) / f"{name}-evaluation" / "summary.json"
        if path.is_file():
            summaries[name] = json.loads(path.read_text())
    head = "| method | " + " | ".join(
        f"{d}: AUROC [95% CI] (n={s['meta']['answers']}, {s['meta']['wrong_share']:.0%} wrong)"
        f" | {d}: s / answer (x gen.)" for d, s in summaries.items()) + " |"
    lines = [head, "|---|" + "---|---|" * len(summaries)]
    rows = {d: {r["method"]: r for r in s["rows"]} for d, s in summaries.items()}
    # Best mean AUROC over the datasets first.
    order = sorted(METHOD_LABELS, key=lambda m: -sum(
        rows[d][m]["auroc"] if m in rows[d] else 0.0 for d in rows))
    for m in order:
        cells = []
        for d in summaries:
            r = rows[d].get(m)
            if r is None:
                cells += ["not run", "not run"]
            else:
                cells += [f"{r['auroc']:.3f} [{r['auroc_low']:.2f}, {r['auroc_high']:.2f}]",
                          f"{r['seconds_per_answer']:.2f} ({r['cost_vs_generation']:.2f}x)"]
        lines.append(f"| {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
    gen = " / ".join(f"{d} {s['meta']['generation_seconds_per_answer']:.2f} s "
                     f"({s['meta']['mean_answer_tokens']:.0f} tokens)"
                     for d, s in summaries.items())
    lines.append("")
    lines.append(f"Greedy generation per answer: {gen}.")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
