"""One benchmark run: greedy answers, their correctness and every method's score, one
JSON line per answer, resumable.

Records are appended to ``answers.jsonl`` as each batch of questions finishes; a run
started again on the same folder skips the questions already there, so an interrupted
run resumes where it stopped and ends with the same table.

A question the model gave no answer to (no content: only whitespace, newlines or an
end-of-turn token) is recorded with ``no_answer`` set, judged wrong, and scored by no
method: an empty answer is not an answer to rank.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from semgrad_guard.calibration.datasets import QAItem
from semgrad_guard.calibration.judges import CorrectnessJudge
from semgrad_guard.errors import ConfigError
from semgrad_guard.model.clock import describe
from semgrad_guard.model.generation import Generation
from semgrad_guard.model.local_model import LocalModel
from semgrad_guard.model.prompts import qa_prompt
from semgrad_guard.scoring.semgrad import SemGradScorer, hybridgrad

from .ptrue import PTrueScorer
from .sampling_baselines import DEFAULT_CLUSTER_THRESHOLD, SAMPLING_SCORES, sampling_scores

ANSWERS_FILE = "answers.jsonl"
CONFIG_FILE = "run.json"

#: Method groups a run can compute, and the score columns each adds.
METHOD_GROUPS: dict[str, tuple[str, ...]] = {
    "semgrad": ("semgrad", "hybridgrad", "semgrad_default", "hybridgrad_default"),
    "likelihood": ("nll", "nll_per_token", "mean_entropy", "max_prob"),
    "p_true": ("p_true",),
    "sampling": tuple(f"{name}_k{k}" for k in (5, 10) for name in SAMPLING_SCORES),
}
DEFAULT_METHODS = tuple(METHOD_GROUPS)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's answers and scores; a resumed run must match it."""

    dataset: str
    split: str
    model: str
    methods: tuple[str, ...] = DEFAULT_METHODS
    judge: str = "containment"
    judge_threshold: float | None = None
    max_new_tokens: int = 64
    sample_max_new_tokens: int = 64
    samples: int = 10
    temperature: float = 1.0
    batch_size: int = 16
    cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check_methods(self) -> None:
        unknown = sorted(set(self.methods) - set(METHOD_GROUPS))
        if unknown:
            raise ConfigError(f"unknown methods {unknown}; allowed: {', '.join(METHOD_GROUPS)}")
        if "sampling" in self.methods and self.samples < 10:
            raise ConfigError("the sampling baselines use K=5 and K=10: samples must be >= 10")


def is_answered(record: dict[str, Any]) -> bool:
    """Whether the model answered (records written before ``no_answer`` was stored: an
    answer with text)."""
    return not record.get("no_answer", not str(record["answer"]).strip())


def read_records(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-answer records of a run folder, in file order (a torn last line is dropped)."""
    return read_jsonl(Path(run_dir) / ANSWERS_FILE)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of an appended-to JSONL file (none when it is missing; a line torn by
    an interrupted writer ends the list)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the last line of a run killed mid-write
    return records


class BenchmarkRun:
    """Generate, judge and score a list of questions into ``out_dir``.

    ``encoder`` (sentence embeddings, for the sampling baselines) defaults to the offline
    MiniLM model on the language model's device. ``max_batches`` stops early (used to test resuming).
    """

    def __init__(self, lm: LocalModel, items: Sequence[QAItem], judge: CorrectnessJudge,
                 config: RunConfig, out_dir: str | os.PathLike[str], *,
                 encoder: Any | None = None, progress: bool = True) -> None:
        config.check_methods()
        self.lm, self.items, self.judge, self.config = lm, list(items), judge, config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self._encoder = encoder
        self.scorers: dict[str, SemGradScorer] = {}
        if "semgrad" in config.methods:
            auto = SemGradScorer(lm, profile="auto", batch_size=config.batch_size)
            if auto.anchor.source == "profile":
                self.scorers["profile"] = auto
        if "semgrad" in config.methods or "likelihood" in config.methods:
            # PG (HybridGrad's parameter-space part) does not depend on the anchor: with a
            # calibrated pass to take it from, the default-anchor pass skips it.
            self.scorers["default"] = SemGradScorer(
                lm, profile=None, batch_size=config.batch_size,
                hybrid="semgrad" in config.methods and "profile" not in self.scorers)
        self.p_true = PTrueScorer(lm, config.batch_size) if "p_true" in config.methods else None

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from semgrad_guard.embeddings import load_sentence_encoder

            self._encoder = load_sentence_encoder(str(self.lm.device))
        return self._encoder

    def _write_config(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / CONFIG_FILE
        current = asdict(self.config)
        current["methods"] = list(self.config.methods)
        anchors = {name: {"offset": s.anchor.offset, "layers": list(s.anchor.layers),
                          "source": s.anchor.source, "profile_id": s.anchor.profile_id}
                   for name, s in self.scorers.items()}
        device = self.lm.device.type
        fmt = self.lm.prompt_format
        prompt_format = {"kind": fmt.kind, "fingerprint": fmt.fingerprint(self.lm.tokenizer)}
        if path.is_file():
            saved = json.loads(path.read_text())
            saved_config = {k: v for k, v in saved.items() if k not in
                            ("anchors", "started", "device", "hardware", "prompt_format")}
            if saved_config != json.loads(json.dumps(current)):
                diff = sorted(k for k in current if saved_config.get(k) != current[k])
                raise ConfigError(f"{path}: this folder holds a run with other settings "
                                  f"({', '.join(diff)}); use another output folder")
            if saved.get("prompt_format", prompt_format) != prompt_format:
                # The same questions asked in another layout are another run.
                raise ConfigError(f"{path}: this folder holds a run with another prompt "
                                  f"format ({saved['prompt_format']}); use another output "
                                  "folder")
            if saved.get("device", "cpu") != device:
                # Every method's time in one run comes from one kind of device.
                raise ConfigError(f"{path}: this folder holds a run timed on "
                                  f"{saved.get('device', 'cpu')}, not {device}; use another "
                                  "output folder")
            return
        current["anchors"] = anchors
        current["prompt_format"] = prompt_format
        current["device"], current["hardware"] = device, describe(self.lm.device)
        current["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        path.write_text(json.dumps(current, indent=2))

    def run(self, max_batches: int | None = None) -> list[dict[str, Any]]:
        """Process every question not yet in the folder; returns all records."""
        self._write_config()
        done = {r["index"] for r in read_records(self.out_dir)}
        todo = [item for item in self.items if item.index not in done]
        size = self.config.batch_size
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        if max_batches is not None:
            batches = batches[:max_batches]
        bar = tqdm(total=len(self.items), initial=len(self.items) - len(todo),
                   desc=f"{self.config.dataset}/{self.config.split}", unit="q",
                   disable=not self.progress)
        with (self.out_dir / ANSWERS_FILE).open("a", encoding="utf-8") as out:
            for batch in batches:
                for record in self.process(batch):
                    out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                bar.update(len(batch))
        bar.close()
        return read_records(self.out_dir)

    # -- one batch ------------------------------------------------------------------------
    def process(self, batch: Sequence[QAItem]) -> list[dict[str, Any]]:
        cfg, lm = self.config, self.lm
        prompts = [qa_prompt(item.question) for item in batch]
        n = len(batch)
        t0 = time.perf_counter()
        greedy = lm.generate_batch(prompts, max_new_tokens=cfg.max_new_tokens)
        gen_time = (time.perf_counter() - t0) / n
        records: list[dict[str, Any]] = []
        for item, g in zip(batch, greedy, strict=True):
            record: dict[str, Any] = {
                "index": item.index, "question": item.question, "gold": item.answers,
                "answer": g.text, "no_answer": g.no_answer, "stop_reason": g.stop_reason,
                "answer_tokens": len(g.response_ids), "prompt_ids": list(g.prompt_ids),
                "response_ids": list(g.response_ids), "scores": {},
                "times": {"generation": gen_time}}
            verdict = getattr(self.judge, "verdict", None)  # judges with a score give it too
            if g.no_answer:
                correct = False  # no answer is never right, and never scored
            elif callable(verdict):
                correct, similarity = verdict(g.text, item.answers)
                record["judge_similarity"] = float(similarity)
            else:
                correct = self.judge.is_correct(g.text, item.answers)
            record["correct"] = bool(correct)
            records.append(record)
        answered = [i for i, g in enumerate(greedy) if not g.no_answer]
        for g in greedy:
            if g.no_answer and g.prefix_cache is not None:
                g.prefix_cache.release()
        if not answered:
            return records
        scored = [records[i] for i in answered]
        self._score_gradients([greedy[i] for i in answered], scored)
        if self.p_true is not None:
            values, seconds = self.p_true.score_batch(
                [(batch[i].question, greedy[i].text) for i in answered])
            for record, v in zip(scored, values, strict=True):
                record["scores"]["p_true"] = v
                record["times"]["p_true"] = seconds
        if "sampling" in cfg.methods:
            self._score_samples([prompts[i] for i in answered], scored)
        return records

    def _score_gradients(self, greedy: Sequence[Generation],
                         records: list[dict[str, Any]]) -> None:
        methods = self.config.methods
        last = list(self.scorers)[-1] if self.scorers else None
        for name, scorer in self.scorers.items():
            # Each pass reuses generation's keys and values for the prompt before its anchor.
            results = scorer.score_batch(greedy, release=name == last)
            for record, r in zip(records, results, strict=True):
                s, t = r.scores, r.timings
                if name == "default" and "likelihood" in methods:
                    for key in METHOD_GROUPS["likelihood"]:
                        record["scores"][key] = s[key]
                        # The likelihood scores need the forward pass only.
                        record["times"][key] = t["forward"]
                if "semgrad" in methods:
                    suffix = "" if name == "profile" else "_default"
                    components = {k: float(v) for k, v in r.components.items()}
                    if "hybridgrad" not in s:
                        # HybridGrad's formula with this anchor's SemGrad and the calibrated
                        # pass's PG and alpha (both anchor-independent).
                        c = record["components"]
                        components.update(pg=c["pg"], alpha=c["alpha"])
                        s = {**s, "hybridgrad": hybridgrad(s["semgrad"], c["pg"], c["alpha"])}
                        hybrid_time = record["times"]["hybridgrad"]
                    else:
                        hybrid_time = t["total"]
                    record["scores"]["semgrad" + suffix] = s["semgrad"]
                    record["scores"]["hybridgrad" + suffix] = s["hybridgrad"]
                    record["components" + suffix] = components
                    record["anchor" + suffix] = {"offset": r.anchor_offset,
                                                 "token": r.anchor_token}
                    # SemGrad needs the forward and backward pass; HybridGrad adds PG, formed
                    # in the pass's aggregation step. A pass without PG is SemGrad alone.
                    pg_in_pass = r.scores.get("hybridgrad") is not None
                    record["times"]["semgrad" + suffix] = (
                        t["forward"] + t["backward"] if pg_in_pass else t["total"])
                    record["times"]["hybridgrad" + suffix] = hybrid_time
                    record["times"]["scoring_detail" + suffix] = {
                        k: t[k] for k in ("forward", "backward", "aggregate")}

    def _score_samples(self, prompts: list[Any], records: list[dict[str, Any]]) -> None:
        cfg, n = self.config, len(records)
        # Seeded by the batch's first question, so that a resumed run samples the same.
        torch.manual_seed(cfg.seed + int(records[0]["index"]))
        t0 = time.perf_counter()
        samples = self.lm.generate_batch(
            prompts, max_new_tokens=cfg.sample_max_new_tokens, do_sample=True,
            temperature=cfg.temperature, top_p=1.0, top_k=0,
            num_return_sequences=cfg.samples)
        sample_time = (time.perf_counter() - t0) / n
        for qi, record in enumerate(records):
            texts = [g.text for g in samples[qi * cfg.samples:(qi + 1) * cfg.samples]]
            record["samples"] = texts
            for k in (5, 10):
                t1 = time.perf_counter()
                vectors = np.asarray(self.encoder.encode(
                    texts[:k], normalize_embeddings=True, show_progress_bar=False))
                scores = sampling_scores(texts[:k], vectors, cfg.cluster_threshold)
                own = time.perf_counter() - t1
                # K=5 reuses the first five of the ten samples: its share of the
                # sampling call is K/10 of the measured time.
                total = sample_time * k / cfg.samples + own
                for name, value in scores.items():
                    record["scores"][f"{name}_k{k}"] = value
                    record["times"][f"{name}_k{k}"] = total
