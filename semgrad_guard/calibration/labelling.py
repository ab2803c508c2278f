"""Labelled answers: the model's greedy answers to questions with gold answers, every
score of each answer, and whether a judge finds it correct.

Threshold fits and error calibrations are fitted on these (``semgrad-guard
fit-thresholds``); :class:`~semgrad_guard.calibration.answers_file.LabelledAnswersFile`
keeps them on disk so that a refit needs no new generation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CalibrationError


@dataclass(frozen=True)
class LabelledScore:
    """One labelled question: its greedy answer, its scores and its correctness.

    ``features`` holds every named statistic of the answer's scoring pass (what a learned
    score is fitted on), ``domain`` the data set it came from, and ``prompt_ids`` /
    ``response_ids`` the exact generation, so that it can be scored again.
    """

    index: int
    question: str
    answer: str
    scores: dict[str, float]
    correct: bool
    stop_reason: str = ""
    features: dict[str, float] = field(default_factory=dict)
    domain: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)


def label_answers(data: str, *, split: str = "calibration", limit: int | None = None,
                  question_field: str = "query", answers_field: str = "truthful answer",
                  model: str | None = None, profile: str = "auto",
                  batch_size: int = 8, max_new_tokens: int = 32, lm: Any = None,
                  scorer: Any = None, judge: Any = None, done: Sequence[LabelledScore] = (),
                  on_batch: Callable[[list[LabelledScore]], None] | None = None,
                  fused: bool = False) -> list[LabelledScore]:
    """Greedy answers to the labelled questions, with every score and their correctness.

    ``question_field`` and ``answers_field`` name the JSONL fields of the question and of
    its gold answer (a string or a list of acceptable answers). Questions already in
    ``done`` (by line index) are not asked again; ``on_batch`` receives each new batch
    as soon as it is labelled (to save progress). Answers are generated, then scored in
    a teacher-forced pass; ``fused`` scores each answer while it is generated instead (a
    :class:`SemGradScorer`; the same scores up to float32 rounding, and slower on CPU: see
    :meth:`SemGradScorer.generate_and_score`).
    """
    from tqdm import tqdm

    from ..model.local_model import LocalModel
    from ..model.prompts import qa_prompt
    from ..scoring.semgrad import SemGradScorer
    from .datasets import dataset_name, load_qa
    from .judges import judge_for

    items = load_qa(data, split=split, limit=limit,  # type: ignore[arg-type]
                    question_field=question_field, answers_field=answers_field)
    if not items:
        raise CalibrationError(f"dataset {data!r} has no questions in split {split!r}")
    wanted = {item.index for item in items}
    previous = [row for row in done if row.index in wanted]
    known = {row.index for row in previous}
    items = [item for item in items if item.index not in known]
    if not items:
        return sorted(previous, key=lambda row: row.index)
    if previous:
        print(f"{len(previous)} labelled answers reused, {len(items)} to go", file=sys.stderr)
    if lm is None:
        lm = LocalModel.load(model)
    if scorer is None:
        scorer = SemGradScorer(lm, profile=None if profile == "default" else profile)
    judge = judge or judge_for(dataset_name(data))
    results: list[LabelledScore] = []
    generating = scoring = 0.0
    unanswered = 0
    with tqdm(total=len(items), desc="generate, score, judge", unit="q",
              file=sys.stderr) as bar:
        for start in range(0, len(items), max(1, batch_size)):
            chunk = items[start:start + max(1, batch_size)]
            t0 = time.perf_counter()
            prompts = [qa_prompt(item.question) for item in chunk]
            together = None
            if fused and isinstance(scorer, SemGradScorer):
                together = scorer.generate_and_score_batch(prompts, fused=True,
                                                           max_new_tokens=max_new_tokens)
                generations = [g for g, _ in together]
            else:
                generations = lm.generate_batch(prompts, max_new_tokens=max_new_tokens)
            t1 = time.perf_counter()
            # The guard never reads a score of an empty answer: thresholds are fitted on
            # the questions the model answered.
            kept = [i for i, g in enumerate(generations) if not g.no_answer]
            answered = [(chunk[i], generations[i]) for i in kept]
            unanswered += len(chunk) - len(answered)
            if together is None:
                scored = scorer.score_batch([(g.prompt_ids, g.response_ids)
                                             for _, g in answered])
            else:
                scored = [together[i][1] for i in kept]
                failed = [s for s in scored if isinstance(s, Exception)]
                if failed:
                    raise failed[0]
            t2 = time.perf_counter()
            generating, scoring = generating + t1 - t0, scoring + t2 - t1
            batch = [LabelledScore(item.index, item.question, generation.text, dict(s.scores),
                                   bool(judge.is_correct(generation.text, item.answers)),
                                   generation.stop_reason, dict(s.features), dataset_name(data),
                                   list(generation.prompt_ids), list(generation.response_ids))
                     for (item, generation), s in zip(answered, scored, strict=True)]
            results.extend(batch)
            if on_batch is not None:
                on_batch(batch)
            bar.update(len(chunk))
    n = len(results) + unanswered
    if fused and isinstance(scorer, SemGradScorer):
        print(f"{n} questions: generation scored while generating {generating / n:.2f} s "
              f"per question", file=sys.stderr)
    else:
        print(f"{n} questions: generation {generating / n:.2f} s and scoring "
              f"{scoring / n:.2f} s per question", file=sys.stderr)
    if unanswered:
        print(f"{unanswered} of {n} questions got no answer (left out of the fit)",
              file=sys.stderr)
    return sorted([*previous, *results], key=lambda row: row.index)
