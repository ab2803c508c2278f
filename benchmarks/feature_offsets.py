"""Would a learned score that reads fewer gradient offsets lose its worst case?

The shipped learned score reads the anchor gradient at every offset of the template's tail
(-1..-6 on the default model); taking the offsets before the anchor lengthens the scoring
pass's graph (see ``feature_cost.py``). This compares, on the calibration splits only
(SciQ, TruthfulQA and the RAG-style set, ``results/learned-score/features/*-calibration.npz``),
the shipped feature set with sets that need fewer offsets, the way the shipped set was
chosen: leave-one-domain-out (fit on two domains with the library's ``choose_C`` and
domain-balanced logistic fit, AUROC on the third; RAG is the mean of its SciQ- and
TruthfulQA-context halves), then ``fit_learned_score``'s nested CV per population, then a
paired bootstrap over held-out answers (models fixed) of each set minus the shipped one.
Output: ``results/learned-score/feature-offsets.md``.

    python benchmarks/feature_offsets.py [--boot 300] [--answers CALIBRATION_ANSWERS.jsonl]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from semgrad_guard.calibration.learned import (
    _fit_logistic,
    _folds,
    choose_C,
    default_features,
    fit_learned_score,
    within_domain_auroc,
)
from semgrad_guard.calibration.supervised import read_labelled_answers
from semgrad_guard.scoring.learned import LIKELIHOOD_FEATURES, default_transform, feature_matrix

LIK = tuple(LIKELIHOOD_FEATURES)
BASE = ("semgrad", "semgrad_sum", "objective_mean", "objective_sum")
SETS = {
    "shipped (-1..-6)": default_features([-1, -2, -3, -4, -5, -6], -4),
    "anchor only (-1)": (*LIK, *BASE, "grad_l2_mean/-1"),
    "offsets -1..-2": (*LIK, *BASE, "grad_l2_mean/-1", "grad_l2_mean/-2"),
    "offsets -1..-4": (*LIK, "semgrad", "grad_l1_mean/-4", *BASE[1:],
                       *(f"grad_l2_mean/{k}" for k in (-1, -2, -3, -4))),
    "likelihood only": LIK,
    "per-token NLL": ("nll_per_token",),
}
HELD = {"sciq": ["sciq"], "truthfulqa": ["truthfulqa"], "rag": ["rag-sciq", "rag-truthfulqa"]}


def load_jsonl(path):
    rows = read_labelled_answers(path)
    feats = [r.features for r in rows]
    y = np.array([int(not r.correct) for r in rows])
    g = np.array([r.domain for r in rows])
    return feats, y, g


def load_npz(folder):
    """The benchmark report's calibration splits (features/<set>-calibration.npz)."""
    feats, ys, gs = [], [], []
    for s in ("sciq", "truthfulqa", "rag"):
        z = np.load(f"{folder}/{s}-calibration.npz", allow_pickle=False)
        names = [str(n) for n in z["names"]]
        for row, c, p in zip(z["features"], z["correct"], z["population"], strict=True):
            feats.append(dict(zip(names, map(float, row), strict=True)))
            ys.append(int(not c))
            gs.append(str(p) if s == "rag" else s)
    return feats, np.array(ys), np.array(gs)


def matrix(feats, names):
    return feature_matrix(feats, names, [default_transform(n) for n in names])


def lodo(x, y, g):
    """Held-out decision values per held-out domain, and the C chosen."""
    out = {}
    for name, doms in HELD.items():
        te = np.isin(g, doms)
        tr = ~te
        if x.shape[1] == 1:  # a single feature: no fit, its AUROC as is (monotone map)
            C, d = float("nan"), x[te, 0]
        else:
            C, _ = choose_C(x[tr], y[tr], g[tr])
            d = _fit_logistic(x[tr], y[tr], g[tr], C, True).decision(x[te])
        out[name] = (C, d, te)
    return out


def held_auroc(d, y, g):
    return float(np.mean(list(within_domain_auroc(d, y, g).values())))


def nested_folds(x, y, g, folds=5):
    """fit_learned_score's nested CV, keeping the per-fold values (its cv_auroc is their mean)."""
    per = {}
    for tr, te in _folds(y, g, folds, 1):
        if x.shape[1] == 1:
            d = x[te, 0]
        else:
            C, _ = choose_C(x[tr], y[tr], g[tr])
            d = _fit_logistic(x[tr], y[tr], g[tr], C, True).decision(x[te])
        for dom, v in within_domain_auroc(d, y[te], g[te]).items():
            per.setdefault(dom, []).append(v)
    return per


def boot_diff(da, db, y, g, B, rng):
    """Paired bootstrap (resampling answers within each population) of AUROC(a) - AUROC(b),
    population-mean as held_auroc; returns resampled values of a and b."""
    pops = sorted(set(g.tolist()))
    idx = {p: np.flatnonzero(g == p) for p in pops}
    va, vb = np.empty(B), np.empty(B)
    for b in range(B):
        aa, bb = [], []
        for p in pops:
            i = rng.choice(idx[p], len(idx[p]))
            if len(set(y[i].tolist())) < 2:
                i = idx[p]
            aa.append(roc_auc_score(y[i], da[i]))
            bb.append(roc_auc_score(y[i], db[i]))
        va[b], vb[b] = np.mean(aa), np.mean(bb)
    return va, vb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", help="a labelled answers file (calibrate --labelled) "
                    "instead of the benchmark's calibration features")
    ap.add_argument("--npz", default=str(Path(__file__).parent / "results" / "learned-score"
                                         / "features"))
    ap.add_argument("--boot", type=int, default=300)
    ap.add_argument("--json")
    a = ap.parse_args()
    feats, y, g = load_jsonl(a.answers) if a.answers else load_npz(a.npz)
    print(f"{len(y)} answers, {int(y.sum())} wrong; populations "
          + ", ".join(f"{p} {int((g == p).sum())}/{int(y[g == p].sum())}w" for p in sorted(set(g))),
          flush=True)
    res, decisions = {}, {}
    for name, names in SETS.items():
        x = matrix(feats, names)
        lo = lodo(x, y, g)
        decisions[name] = lo
        lodo_auc = {k: held_auroc(d, y[te], g[te]) for k, (C, d, te) in lo.items()}
        per = nested_folds(x, y, g)
        if x.shape[1] > 1:  # check: the library's own fit reports the same nested CV
            fit = fit_learned_score(feats, y.astype(bool), g, features=names)
            assert all(abs(fit.cv_auroc["learned"][k] - np.mean(v)) < 1e-12 for k, v in per.items())
        res[name] = {"n_features": len(names), "features": list(names),
                     "C": {k: v[0] for k, v in lo.items()}, "lodo": lodo_auc,
                     "lodo_worst": min(lodo_auc.values()),
                     "nested": {k: float(np.mean(v)) for k, v in per.items()},
                     "nested_fold_sd": {k: float(np.std(v, ddof=1)) for k, v in per.items()},
                     "nested_worst": min(float(np.mean(v)) for v in per.values())}
        r = res[name]
        print(f"{name:18s} k={len(names):2d} C={[r['C'][k] for k in HELD]} LODO "
              + " ".join(f"{k} {v:.3f}" for k, v in lodo_auc.items())
              + f" worst {r['lodo_worst']:.3f} | nested "
              + " ".join(f"{k} {v:.3f}±{r['nested_fold_sd'][k]:.3f}" for k, v in r["nested"].items())
              + f" worst {r['nested_worst']:.3f}", flush=True)

    rng = np.random.default_rng(0)
    ref = "shipped (-1..-6)"
    print(f"\npaired bootstrap ({a.boot} resamples of held-out answers, models fixed): "
          f"AUROC(set) - AUROC(shipped), 95% interval", flush=True)
    for name in SETS:
        if name == ref:
            continue
        per_dom_a, per_dom_b, line = {}, {}, []
        for k in HELD:
            C, da, te = decisions[name][k]
            _, db, _ = decisions[ref][k]
            va, vb = boot_diff(da, db, y[te], g[te], a.boot, rng)
            per_dom_a[k], per_dom_b[k] = va, vb
            diff = va - vb
            lo_, hi_ = np.percentile(diff, [2.5, 97.5])
            line.append(f"{k} {res[name]['lodo'][k] - res[ref]['lodo'][k]:+.3f} [{lo_:+.3f},{hi_:+.3f}]")
            res[name].setdefault("boot_diff", {})[k] = [float(lo_), float(hi_)]
        # domains are independent samples; the worst of each resample
        wa = np.min(np.stack(list(per_dom_a.values())), 0)
        wb = np.min(np.stack(list(per_dom_b.values())), 0)
        lo_, hi_ = np.percentile(wa - wb, [2.5, 97.5])
        res[name]["boot_diff"]["worst"] = [float(lo_), float(hi_)]
        res[name]["p_worse_worst"] = float(np.mean(wa < wb))
        print(f"{name:18s} " + "  ".join(line)
              + f"  worst {res[name]['lodo_worst'] - res[ref]['lodo_worst']:+.3f} [{lo_:+.3f},{hi_:+.3f}]"
              f" P(worse)={res[name]['p_worse_worst']:.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
