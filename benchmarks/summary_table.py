"""Print the README's headline table from the committed summaries.

    .venv/bin/python benchmarks/summary_table.py RESULTS [COST_RESULTS ...]

AUROC comes from the run folders under RESULTS; each further folder adds a cost column
(mean time per answer as a multiple of greedy generation) measured on its own hardware.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from semgrad_bench.report import METHOD_LABELS

DATASETS = ("sciq", "truthfulqa")


def load(root: str) -> dict[str, Any]:
    summaries = {}
    for name in DATASETS:
        path = Path(root) / f"{name}-evaluation" / "summary.json"
        if path.is_file():
            summaries[name] = json.loads(path.read_text())
    return summaries


def by_method(summaries: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d: {r["method"]: r for r in s["rows"]} for d, s in summaries.items()}


def main(root: str, *cost_roots: str) -> None:
    costs = [(s, by_method(s)) for s in map(load, (root, *cost_roots))]
    summaries, rows = costs[0]
    head = ["method"] + [
        f"{d}: AUROC [95% CI] (n={s['meta']['answers']}, {s['meta']['wrong_share']:.0%} wrong)"
        for d, s in summaries.items()]
    for cost_summaries, _ in costs:
        hardware = next(iter(cost_summaries.values()))["meta"].get("hardware", "CPU")
        n = " / ".join(str(s["meta"]["answers"]) for s in cost_summaries.values())
        head.append(f"x generation, {' / '.join(cost_summaries)} ({hardware}, n={n})")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    # Best mean AUROC over the datasets first.
    order = sorted((m for m in METHOD_LABELS if any(m in rows[d] for d in rows)),
                   key=lambda m: -sum(rows[d][m]["auroc"] if m in rows[d] else 0.0
                                      for d in rows))
    for m in order:
        cells = [METHOD_LABELS[m]]
        for d in summaries:
            r = rows[d].get(m)
            cells.append("not run" if r is None else
                         f"{r['auroc']:.3f} [{r['auroc_low']:.2f}, {r['auroc_high']:.2f}]")
        for cost_summaries, cost_rows in costs:
            cells.append(" / ".join(
                f"{cost_rows[d][m]['cost_vs_generation']:.2f}" if m in cost_rows[d] else "not run"
                for d in cost_summaries))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for cost_summaries, _ in costs:
        gen = " / ".join(f"{d} {s['meta']['generation_seconds_per_answer']:.3g} s "
                         f"({s['meta']['mean_answer_tokens']:.0f} tokens)"
                         for d, s in cost_summaries.items())
        hardware = next(iter(cost_summaries.values()))["meta"].get("hardware", "CPU")
        lines.append(f"Greedy generation per answer on {hardware}: {gen}.")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
