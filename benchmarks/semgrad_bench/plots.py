"""ROC and risk-coverage curves of every method on one figure each (PNG)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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


def plot_roc(scores: Mapping[str, npt.ArrayLike], correct: npt.ArrayLike,
             path: str | os.PathLike[str], title: str) -> Path:
    """One ROC figure of a few scores, each labelled with its AUROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import auroc

    fig, ax = plt.subplots(figsize=(7.5, 6))
    for name, s in scores.items():
        fpr, tpr = roc_points(s, correct)
        ax.plot(fpr, tpr, linewidth=1.3, label=f"{name} ({auroc(s, correct):.3f})")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="random")
    ax.set(xlabel="false-positive rate (right answers flagged)",
           ylabel="true-positive rate (wrong answers flagged)", title=f"ROC, {title}")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_reliability(sets: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
                     path: str | os.PathLike[str], bins: int = 10) -> Path:
    """Reliability diagrams, one panel per set: mean predicted probability of error
    against the observed share of wrong answers in each bin (marker area: answers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import expected_calibration_error, reliability_bins

    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 4.4), squeeze=False)
    for ax, (name, (p, correct)) in zip(axes[0], sets.items(), strict=True):
        rows = reliability_bins(p, correct, bins)
        ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfect")
        ax.plot([b.mean_predicted for b in rows], [b.observed_wrong for b in rows], "-",
                color="tab:blue", linewidth=1)
        ax.scatter([b.mean_predicted for b in rows], [b.observed_wrong for b in rows],
                   s=[10 + 2 * b.answers for b in rows], color="tab:blue", alpha=0.7,
                   label=f"learned (ECE {expected_calibration_error(p, correct, bins):.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of error",
               ylabel="observed share wrong", title=f"{name} evaluation")
        ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
