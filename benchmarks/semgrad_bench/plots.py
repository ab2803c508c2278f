"""ROC and risk-coverage curves of every method on one figure each (PNG)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import rejection_curve, roc_points


def plot_curves(scores: Mapping[str, Sequence[float]], correct: Sequence[bool],
                out_dir: str | os.PathLike[str], title: str = "",
                labels: Mapping[str, str] | None = None) -> list[Path]:
    """Write ``roc.png`` and ``risk_coverage.png``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    out = Path(out_dir)
    paths = []
    # Twenty distinct colours, and a line style per family, so that no two methods look alike.
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    styles: dict[str, dict[str, Any]] = {name: {"color": colours[i % len(colours)], "linewidth": 1.3,
                     "linestyle": "-" if "grad" in name or "combined" in name
                     else "--" if "_k" in name else "-."}
              for i, name in enumerate(scores)}
    fig, ax = plt.subplots(figsize=(11, 6))
    for name, s in scores.items():
        fpr, tpr = roc_points(s, correct)
        ax.plot(fpr, tpr, label=labels.get(name, name), **styles[name])
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="random")
    ax.set(xlabel="false-positive rate (right answers flagged)",
           ylabel="true-positive rate (wrong answers flagged)", title=f"ROC, {title}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    paths.append(out / "roc.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 6))
    wrong = ~np.asarray(correct, dtype=bool)
    for name, s in scores.items():
        rejection, risk = rejection_curve(s, correct)
        ax.plot(1.0 - rejection, risk, label=labels.get(name, name), **styles[name])
    ax.axhline(float(wrong.mean()), color="k", linestyle=":", linewidth=0.8,
               label="no rejection")
    ax.set(xlabel="coverage (share of answers kept)", ylabel="risk (error rate of kept answers)",
           title=f"Risk-coverage, {title}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    paths.append(out / "risk_coverage.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
