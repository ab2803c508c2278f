"""The benchmark's command line: does SemGrad find the wrong answers, against which
rivals, at what cost.

    semgrad-bench run --data sciq --split evaluation --output results/sciq-evaluation
    semgrad-bench analysis --output results/sciq-evaluation
    semgrad-bench learned-score --features results/learned-score/features \
        --output results/learned-score
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semgrad_guard.calibration.datasets import dataset_name, load_qa
from semgrad_guard.calibration.judges import (
    ContainmentJudge,
    CorrectnessJudge,
    EmbeddingJudge,
    judge_for,
)
from semgrad_guard.errors import ConfigError, SemGradGuardError

from .runner import DEFAULT_METHODS, METHOD_GROUPS, BenchmarkRun, RunConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semgrad-bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = subparsers.add_parser(
        "run", help="benchmark SemGrad against likelihood and sampling baselines",
        description="Generate greedy answers to a question set, judge them, score them with "
                    "every method and write per-answer records, a summary table (AUROC, "
                    "AUPR, PRR with bootstrap CIs; wrong answers are the positives), costs "
                    "and plots. Questions the model gives no answer to are counted apart "
                    "and left out of the metrics, with the all-questions AUROC beside "
                    "them. Re-running on the same output folder resumes.")
    p.add_argument("--data", default="sciq",
                   help="sciq, truthfulqa or a JSONL file (default: sciq)")
    p.add_argument("--split", default="evaluation", choices=["calibration", "evaluation", "all"])
    p.add_argument("--limit", type=int, help="first N questions of the split")
    p.add_argument("--question-field", default="query")
    p.add_argument("--answers-field", default="truthful answer")
    p.add_argument("--model", help="local model folder (default: the offline default model)")
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain"])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated groups of {', '.join(METHOD_GROUPS)} (default: all)")
    p.add_argument("--judge", default="auto", choices=["auto", "containment", "embedding"],
                   help="correctness judge (auto: embedding for truthfulqa, else containment)")
    p.add_argument("--judge-threshold", type=float,
                   help="cosine threshold of the embedding judge (default 0.7)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="greedy answers (default 64)")
    p.add_argument("--sample-max-new-tokens", type=int, default=32,
                   help="sampled answers (default 32)")
    p.add_argument("--samples", type=int, default=10, help="samples per question (default 10)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto",
                   help="where the model runs: auto (cuda when available, else cpu), cpu, "
                        "cuda, cuda:N (default: auto); every time in the run is measured there")
    p.add_argument("--output", required=True, help="results folder (resumed if it exists)")
    p.add_argument("--calibration-run",
                   help="results folder of a calibration-split run: fits the combined scores")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the summary of --output without generating anything")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.set_defaults(func=run_benchmark)

    a = subparsers.add_parser(
        "analysis", help="anchor sweep and re-judging of a finished benchmark run",
        description="Re-score a run's stored answers with SemGrad at every anchor offset of "
                    "the template tail, and recompute every AUROC under another judge; "
                    "writes analysis.json and analysis.md into the run folder.")
    a.add_argument("--output", required=True, help="results folder of a benchmark run")
    a.add_argument("--offsets", default="-1,-2,-3,-4,-5,-6",
                   help="anchor offsets to sweep (default -1..-6; \"\" skips the sweep)")
    a.add_argument("--rejudge", default="containment,embedding",
                   help="judges to recompute the labels with (default: both)")
    a.add_argument("--limit", type=int, help="first N answers of the run")
    a.add_argument("--threads", type=int)
    a.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    a.set_defaults(func=run_analysis)

    ls = subparsers.add_parser(
        "learned-score", help="the learned probability of error on the evaluation splits",
        description="Fit the learned score, its rivals and the best single SemGrad "
                    "configuration on the calibration splits of SciQ, TruthfulQA and the "
                    "RAG-style set; report on their evaluation splits: AUROC with bootstrap "
                    "CIs for every row, paired differences, the gradient ablation, "
                    "cross-dataset transfer, ECE and a reliability plot, AUROC within "
                    "answer-length thirds, ROC plots. Writes report.md, report.json and PNGs.")
    ls.add_argument("--features", required=True,
                    help="folder of <set>.npz features files (sciq-, truthfulqa-, rag- "
                         "calibration and evaluation), as 'semgrad-bench features' writes them")
    ls.add_argument("--output", required=True, help="report folder")
    ls.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (2000)")
    ls.set_defaults(func=run_learned_score)

    rs = subparsers.add_parser(
        "rag-set", help="build the RAG-style question set from the shared SciQ and TruthfulQA",
        description="Build the RAG-style set deterministically: context passages (the "
                    "question's own passage or not, and retrieved distractors), then the "
                    "question. Writes rag-calibration/ and rag-evaluation/ JSONL files (one "
                    "per dataset) and manifest.json with their SHA-256.")
    rs.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "data" / "rag-style"),
                    help="folder for the set (default: benchmarks/data/rag-style)")
    rs.add_argument("--per-dataset", type=int, default=150,
                    help="questions per dataset and part (default 150)")
    rs.add_argument("--seed", type=int, default=0)
    rs.set_defaults(func=run_rag_set)

    fs = subparsers.add_parser(
        "features", help="the scoring pass's features of labelled answers",
        description="Score labelled answers with the library's scorer (anchor -1, layers "
                    "15-29, feature offsets -1..-6) and write <output>/<name>.npz for "
                    "'semgrad-bench learned-score'. Answers come from a benchmark run folder "
                    "(--run: scored again, nothing generated) or are generated and judged "
                    "for a question file (--questions: the RAG-style set). Resumable: "
                    "<output>/<name>.answers.jsonl grows batch by batch.")
    src = fs.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="benchmark run folder with answers.jsonl")
    src.add_argument("--questions",
                     help="JSONL of questions (fields query, truthful answer, source_index, "
                          "source_dataset), e.g. benchmarks/data/rag-style/rag-evaluation/sciq.jsonl")
    fs.add_argument("--name", required=True,
                    help="set name, e.g. sciq-evaluation or rag-calibration (both RAG "
                         "halves go into one set under their own --population)")
    fs.add_argument("--population", help="source population (default: the name's dataset)")
    fs.add_argument("--output", required=True, help="features folder")
    fs.add_argument("--stored", default="p_true,hybridgrad,hybridgrad_default,"
                    "semantic_entropy_k5,lexical_similarity_k5,eigenscore_k5,"
                    "semantic_entropy_k10,lexical_similarity_k10,eigenscore_k10",
                    help="stored score columns of --run kept beside the features")
    fs.add_argument("--verify", type=int, metavar="N",
                    help="instead: score the first N answers of --run again and compare "
                         "with <output>/<name>.npz (max relative difference)")
    fs.add_argument("--threads", type=int)
    fs.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    fs.set_defaults(func=run_features)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SemGradGuardError as exc:
        print(f"semgrad-bench: error: {exc}", file=sys.stderr)
        return 2


def _judge(args: argparse.Namespace, name: str) -> CorrectnessJudge:
    if args.judge == "containment":
        return ContainmentJudge()
    if args.judge == "embedding" or (args.judge == "auto" and name == "truthfulqa"):
        return EmbeddingJudge() if args.judge_threshold is None \
            else EmbeddingJudge(args.judge_threshold)
    return judge_for(name)


def run_benchmark(args: argparse.Namespace) -> int:
    from .report import summarize

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.report_only:
        import torch

        from semgrad_guard.model.local_model import LocalModel

        if args.threads:
            torch.set_num_threads(args.threads)
        name = dataset_name(args.data)
        items = load_qa(args.data, args.split, question_field=args.question_field,
                        answers_field=args.answers_field, limit=args.limit)
        if not items:
            raise ConfigError(f"no questions in {args.data} ({args.split} split)")
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        lm = LocalModel.load(args.model, prompt_format=args.prompt_format,
                             device=args.device)
        judge = _judge(args, name)
        config = RunConfig(
            dataset=name, split=args.split, model=lm.name, methods=methods, judge=judge.name,
            judge_threshold=getattr(judge, "threshold", None),
            max_new_tokens=args.max_new_tokens,
            sample_max_new_tokens=args.sample_max_new_tokens, samples=args.samples,
            temperature=args.temperature, batch_size=args.batch_size, seed=args.seed,
            extra={"prompt_format": lm.prompt_format.kind})
        BenchmarkRun(lm, items, judge, config, args.output).run()
    rows = summarize(args.output, args.calibration_run, resamples=args.bootstrap)
    if rows:
        print((Path(args.output) / "summary.md").read_text())
    return 0


def run_analysis(args: argparse.Namespace) -> int:
    import json

    from .analysis import anchor_sweep, length_effect, rejudge
    from .report import add_derived_scores, method_names
    from .runner import is_answered, read_records

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.output)
    stored = read_records(out)[: args.limit]
    # Empty answers carry no score: the follow-ups are about the answers.
    records = [r for r in stored if is_answered(r)]
    if not records:
        raise ConfigError(f"no answers in {out}")
    config = json.loads((out / "run.json").read_text())
    add_derived_scores(records)
    methods = method_names(records)
    result: dict[str, object] = {"answers": len(records),
                                 "no_answer": len(stored) - len(records)}
    judges: dict[str, CorrectnessJudge] = {"containment": ContainmentJudge(),
                                           "embedding": EmbeddingJudge()}
    result["rejudge"] = [rejudge(records, judges[name.strip()], methods)
                         for name in args.rejudge.split(",") if name.strip()]
    result["length"] = length_effect(records, methods)
    offsets = [int(k) for k in args.offsets.split(",") if k.strip()]
    if offsets:
        import torch

        from semgrad_guard.model.local_model import LocalModel

        if args.threads:
            torch.set_num_threads(args.threads)
        lm = LocalModel.load(None if config["model"] == "SmolLM2-135M-Instruct"
                             else config["model"],
                             prompt_format=config.get("extra", {}).get("prompt_format", "auto"),
                             device=args.device)
        result["anchor_sweep"] = anchor_sweep(lm, records, offsets)
    (out / "analysis.json").write_text(json.dumps(result, indent=2))
    empty = len(stored) - len(records)
    lines = [f"# Analysis of {config['dataset']} / {config['split']} ({len(records)} answers"
             + (f"; {empty} questions without an answer left out)" if empty else ")"), ""]
    for r in result.get("anchor_sweep", []):  # type: ignore[attr-defined]
        lines.append(f"- SemGrad at offset {r['offset']} ({r['token']!r}), layers "
                     f"{r['layers'][0]}..{r['layers'][-1]}: AUROC {r['auroc']:.3f}")
    for j in result["rejudge"]:  # type: ignore[attr-defined]
        best = sorted(j["auroc"].items(), key=lambda kv: -kv[1])
        lines.append(f"- judge {j['judge']}: {j['wrong_share']:.0%} wrong, agrees with the "
                     f"run's judge on {j['agreement_with_run_judge']:.0%}; AUROC " +
                     ", ".join(f"{m} {v:.3f}" for m, v in best))
    lines += ["", *_length_table(result["length"])]  # type: ignore[arg-type]
    (out / "analysis.md").write_text("\n".join(lines) + "\n")
    print((out / "analysis.md").read_text())
    return 0


def run_learned_score(args: argparse.Namespace) -> int:
    from . import learned_report

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    report = learned_report.evaluate(learned_report.load(args.features), args.resamples, out)
    command = (f"semgrad-bench learned-score --features {args.features} --output {args.output}"
               + (f" --resamples {args.resamples}" if args.resamples != 2000 else ""))
    print(learned_report.write(report, out, command).read_text())
    return 0


def run_rag_set(args: argparse.Namespace) -> int:
    import json

    from .rag_set import write_rag_set

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    manifest = write_rag_set(args.output, args.per_dataset, args.seed)
    print(json.dumps(manifest, indent=1))
    return 0


def run_features(args: argparse.Namespace) -> int:
    import json

    import torch

    from semgrad_guard.model.local_model import LocalModel

    from . import pass_features

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    population = args.population or args.name.rsplit("-", 1)[0]
    lm = LocalModel.load(device=args.device)
    if args.verify:
        if not args.run:
            raise ConfigError("--verify needs --run")
        print(json.dumps(pass_features.verify(lm, args.run, args.output, args.name,
                                              args.verify, args.population), indent=1))
        return 0
    if args.run:
        stored = [s.strip() for s in args.stored.split(",") if s.strip()]
        path = pass_features.features_of_run(lm, args.run, args.name, population, args.output,
                                             stored)
    else:
        path = pass_features.features_of_questions(lm, args.questions, args.name, population,
                                                   args.output)
    print(path)
    return 0


def _length_table(length: dict[str, Any]) -> list[str]:
    from .report import METHOD_LABELS

    bands = length["bands"]
    head = [f"{b['tokens'][0]}-{b['tokens'][1]} tokens ({b['answers']}, "
            f"{b['wrong_share']:.0%} wrong)" for b in bands]
    lines = [f"Answer length alone: AUROC {length['length_auroc']:.3f}. AUROC within "
             "answer-length bands:", "",
             "| method | Spearman with length | AUROC | " + " | ".join(head) + " |",
             "|---|---|---|" + "---|" * len(bands)]
    for row in sorted(length["methods"], key=lambda r: -r["auroc"]):
        cells = " | ".join(f"{v:.3f}" for v in row["auroc_by_band"])
        lines.append(f"| {METHOD_LABELS.get(row['method'], row['method'])} | "
                     f"{row['spearman_with_length']:+.2f} | {row['auroc']:.3f} | {cells} |")
    return lines
