"""How far the two-pass SemGrad score of one answer moves under float32 rounding alone.

The teacher-forced score of a fixed ``(prompt, answer)`` is one function of the model's
weights, but float32 gives it a slightly different value depending on how the work is
laid out: the answer scored alone or in a left-padded batch with other answers, the
prompt's keys and values taken from generation's cache or recomputed from the ids. This
script scores the same greedy answers to SciQ questions on the default model every such
way, and against the same pass in float64, and prints the relative differences (max and
median over the answers): SemGrad alone, and the largest over every score, component and
feature (those of magnitude above 1e-9, as the tests compare them). The fused path
(scored while generating) sits in the same table, so its distance from the two-pass
score can be read against the two-pass score's distance from itself.

    python benchmarks/float32_floor.py [--questions 16] [--max-new-tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from semgrad_guard import LocalModel, SemGradScorer, UncertaintyScore, qa_prompt
from semgrad_guard.calibration.datasets import load_qa
from semgrad_guard.model.clock import describe

#: Magnitudes below this are compared absolutely (as the tests do), not relatively.
FLOOR = 1e-9


def fields(score: UncertaintyScore) -> dict[str, float]:
    """Every number of a score: its scores, components and features."""
    return {**{f"scores/{k}": v for k, v in score.scores.items()},
            **{f"components/{k}": v for k, v in score.components.items()},
            **{f"features/{k}": v for k, v in score.features.items()}}


def relative(got: float, want: float) -> float:
    return abs(got - want) / abs(want) if abs(want) > FLOOR else 0.0


def compare(got: list[UncertaintyScore], want: list[UncertaintyScore]
            ) -> dict[str, Any]:
    """Per answer: SemGrad's relative difference, and the largest over every field; and
    the field where the largest of all is."""
    semgrad, worst, where = [], [], []
    for g, w in zip(got, want, strict=True):
        assert g.prompt_ids == w.prompt_ids and g.response_ids == w.response_ids
        semgrad.append(relative(g.scores["semgrad"], w.scores["semgrad"]))
        gf, wf = fields(g), fields(w)
        assert gf.keys() == wf.keys()
        name = max(wf, key=lambda k: relative(gf[k], wf[k]))
        worst.append(relative(gf[name], wf[name]))
        where.append(name)
    return {"semgrad": semgrad, "every_field": worst,
            "worst_field": where[worst.index(max(worst))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="also score the first 4 answers alone with N torch threads "
                             "(default: not)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    lm = LocalModel.load()
    scorer = SemGradScorer(lm, method="hybridgrad")
    items = load_qa("sciq", split="evaluation", limit=args.questions)
    prompts = [qa_prompt(item.question) for item in items]

    answered = [(p, lm.generate(p, max_new_tokens=args.max_new_tokens))
                for p in tqdm(prompts, desc="generate")]
    answered = [(p, g) for p, g in answered if not g.no_answer]
    generations = [g for _, g in answered]
    pairs = [(list(g.prompt_ids), list(g.response_ids)) for g in generations]

    def each(score_one: Callable[[int], UncertaintyScore]) -> list[UncertaintyScore]:
        return [score_one(i) for i in tqdm(range(len(pairs)), leave=False)]

    alone = each(lambda i: scorer.score_batch([pairs[i]])[0])
    # From what generation kept (its prompt cache, the hidden state at the lowest anchor
    # layer and the linear layers' outputs above it), and the same computing those again.
    scorer._given_outputs = False
    recomputed = [scorer.score_generation(g, release=False) for g in generations]
    scorer._given_outputs = True
    cached = [scorer.score_generation(g) for g in generations]
    # One left-padded batch of every answer (the library's score_batch would cut it into
    # chunks of similar answer length; this is the widest padding a batch can bring).
    padded = scorer._score_chunk(pairs, False, [None] * len(pairs))
    library_batch = scorer.score_batch(pairs)  # chunked by answer length, as shipped
    fused = [scorer.generate_and_score(p, fused=True, max_new_tokens=args.max_new_tokens)
             for p, _ in tqdm(answered, desc="fused")]
    same = [i for i, (g, _) in enumerate(fused) if g.response_ids == generations[i].response_ids]
    fused_scores = [fused[i][1] for i in same]

    threads, first = torch.get_num_threads(), min(4, len(pairs))
    other_threads = []
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            other_threads = [scorer.score_batch([pairs[i]])[0] for i in range(first)]
        finally:
            torch.set_num_threads(threads)

    # Every answer cut to its first two tokens (those with text), scored alone: the output
    # head's backward then has two rows, the shape a matrix-vector kernel serves.
    short = [(p, r[:2]) for p, r in pairs
             if lm.tokenizer.decode(r[:2], skip_special_tokens=True).strip()]
    short_alone = [scorer.score_batch([row])[0] for row in short]

    lm.model.to(torch.float64)
    try:
        exact = each(lambda i: scorer.score_batch([pairs[i]])[0])
        short_exact = [scorer.score_batch([row])[0] for row in short]
    finally:
        lm.model.to(torch.float32)

    rows = {
        "two-pass alone, again (same layout)": compare(
            each(lambda i: scorer.score_batch([pairs[i]])[0]), alone),
        "in a left-padded batch of all": compare(padded, alone),
        "score_batch of all (chunked)": compare(library_batch, alone),
        "from what generation kept": compare(cached, alone),
        "the same, linear layers recomputed": compare(recomputed, alone),
        "fused (scored while generating)": compare(fused_scores,
                                                   [alone[i] for i in same]),
        "two-pass alone vs float64": compare(alone, exact),
        "fused vs float64": compare(fused_scores, [exact[i] for i in same]),
        f"first 2 tokens alone vs float64 ({len(short)})": compare(short_alone, short_exact),
    }
    if other_threads:
        rows[f"{args.threads} torch threads, not {threads} (first {first})"] = compare(
            other_threads, alone[:first])

    lengths = [len(r) for _, r in pairs]
    print(f"\ndefault model, float32, {len(pairs)} SciQ answers (greedy, up to "
          f"{args.max_new_tokens} tokens; {min(lengths)}-{max(lengths)} tokens, median "
          f"{statistics.median(lengths)}), torch {torch.__version__}, {describe(lm.device)}")
    print(f"fused answers identical to the two-pass ones: {len(same)}/{len(pairs)}\n")
    print("relative difference from the two-pass score of the same answer alone "
          "(float64 rows: from the float64 pass)\n")
    print(f"{'computed':<40}{'SemGrad max':>13}{'median':>10}{'any field max':>15}"
          f"{'median':>10}  field of the max")
    for name, found in rows.items():
        s, f = found["semgrad"], found["every_field"]
        print(f"{name:<40}{max(s):>13.1e}{statistics.median(s):>10.1e}{max(f):>15.1e}"
              f"{statistics.median(f):>10.1e}  {found['worst_field'] if max(f) else '-'}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"hardware": describe(lm.device), "answers": len(pairs),
                       "rows": {name: {**{k: {"max": max(found[k]),
                                              "median": statistics.median(found[k])}
                                           for k in ("semgrad", "every_field")},
                                       "worst_field": found["worst_field"]}
                                for name, found in rows.items()}}, out, indent=2)


if __name__ == "__main__":
    main()
