"""Bulk re-scoring of logged generations as a Ray Data pipeline with a pool of scorer actors.

Production traffic, logged as JSONL or recorded in the guard's audit trail, is scored
again (with another model, anchor or score method, or after an upgrade), for example to
refit a threshold on real questions once reviewers have labelled some answers::

    rows = rescore("traffic.jsonl", num_actors=4)
    fit = threshold_for_error([r["scores"]["nll_per_token"] for r in rows],
                              [r["correct"] for r in rows], target_error=0.2)

A JSONL line holds the prompt and ``answer``, or the exact ``prompt_ids`` and
``response_ids``; every other field (ids, labels) is passed through to the output row.
The prompt is ``messages`` (chat messages, or one user message as a string) or
``prompt`` (the same), rendered as they are, or else ``question``: a
:class:`~semgrad_guard.QAPrompt`'s question, asked in the scoring model's own prompt
format as the scorer in process and the scoring service ask it (a base model's plain
prompt, an instruct model's reference chat message). An audit trail (a
:class:`~semgrad_guard.policy.AuditTrail` or its SQLite path) gives each decision's
question, the model's answer and the prompt the guard scored it against
(:func:`read_audit`), so its answers are scored again as the guard scored them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .backend import ItemScorer
from .ray_support import require
from .wire import ScoreItem, result_to_dict

_ITEM_KEYS = ("messages", "prompt", "question", "answer", "prompt_ids", "response_ids")


def _item(record: Mapping[str, Any], where: str) -> ScoreItem:
    if "prompt_ids" in record or "response_ids" in record:
        data = {"prompt_ids": record.get("prompt_ids"), "response_ids": record.get("response_ids")}
    elif "messages" in record or "prompt" in record:  # explicit messages win
        messages = record["messages"] if "messages" in record else record["prompt"]
        data = {"messages": messages, "answer": record.get("answer")}
    else:
        data = {"question": record.get("question"), "answer": record.get("answer")}
    try:
        return ScoreItem.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a scorable record ({exc})") from exc


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file, each checked to be scorable (file and line on error)."""
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc})") from exc
            _item(record, f"{path}:{number}")
            records.append(record)
    return records


def read_audit(audit: Any) -> list[dict[str, Any]]:
    """The audit trail's decisions as records: the question, the model's answer, its
    prompt, and ``audit_id``, ``chain``, ``action``, ``case_id``, ``recorded_score`` and
    ``recorded_method``.

    The prompt is the one the guard scored the answer against
    (:attr:`~semgrad_guard.policy.AuditRecord.prompt`): chat messages or a prompt text
    as ``prompt``, rendered as they are; a :class:`~semgrad_guard.QAPrompt` as the
    record's ``question`` (its question, which is a retry's own query when the
    application asked that), asked in the scoring model's own prompt format. A record
    written before the trail kept prompts, or whose answer came with only its exact ids
    or a ready score, is scored against the question as the user's message (``prompt``:
    the question; for a base model its plain prompt, the same ids as
    ``qa_prompt(question)``). Re-scored answers are flagged ``retokenized``. A trail
    that redacts questions or prompts (:class:`~semgrad_guard.review.Redaction`) holds
    the redacted text, so its records do not re-score to their recorded scores."""
    from ..model.prompts import QAPrompt
    from ..policy.audit import AuditTrail

    trail = audit if isinstance(audit, AuditTrail) else AuditTrail(audit)
    records = []
    for r in trail.records():
        answer = r.chosen_answer if r.chosen_answer is not None else r.answer
        if not answer:
            continue
        record: dict[str, Any] = {"question": r.question}
        if isinstance(r.prompt, QAPrompt):
            record["question"] = r.prompt.question
        else:
            record["prompt"] = r.question if r.prompt is None else r.prompt
        records.append({**record, "answer": answer, "audit_id": r.id, "chain": r.chain,
                        "action": r.action, "case_id": r.case_id,
                        "recorded_score": r.score, "recorded_method": r.method})
    return records


def _records(source: Any) -> list[dict[str, Any]]:
    from ..policy.audit import AuditTrail

    if isinstance(source, AuditTrail):
        return read_audit(source)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"no such file: {path}")
        return read_jsonl(path) if path.suffix in (".jsonl", ".json") else read_audit(path)
    records = [dict(r) for r in source]
    for i, record in enumerate(records):
        _item(record, f"record {i}")
    return records


def _pipeline_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline's input rows: each record's position and its wire item as JSON."""
    return [{"row": i, "item": _item(r, f"record {i}").model_dump_json()}
            for i, r in enumerate(records)]


def _score_batch(backend: ItemScorer, batch: Mapping[str, Any]) -> dict[str, Any]:
    """What a scorer actor does with one batch of :func:`_pipeline_rows`: every item in
    one pass, each outcome (a whole score, or its error) as JSON beside its position."""
    items = [ScoreItem.model_validate_json(text) for text in batch["item"]]
    outcomes = backend.score_items(items)
    return {"row": list(batch["row"]),
            "result": [json.dumps(result_to_dict(o)) for o in outcomes]}


def _output_rows(records: Sequence[Mapping[str, Any]], results: Sequence[str | None],
                method: str) -> list[dict[str, Any]]:
    """Each record with its result (:func:`_score_batch`' JSON, ``None`` when the pipeline
    returned none): ``score``, ``scores``, ``value`` and ``error``."""
    out = []
    lost: dict[str, Any] = {"error": {"type": "ScoringError",
                                      "message": "the pipeline returned no result"}}
    for record, text in zip(records, results, strict=True):
        result = lost if text is None else json.loads(text)
        data, error = result.get("score"), result.get("error")
        entry = dict(record)
        entry["score"] = data
        entry["scores"] = None if data is None else data["scores"]
        entry["value"] = None if data is None else data["scores"].get(method)
        entry["error"] = None if error is None else f"{error['type']}: {error['message']}"
        out.append(entry)
    return out


class ScorerActor:
    """One scorer of the pool: loads the model once, then scores batches of rows."""

    def __init__(self, model: str | None, method: str, profile: str | None,
                 device: str | None) -> None:
        from ..model.local_model import LocalModel
        from ..scoring.semgrad import SemGradScorer

        lm = LocalModel.load(model, device=device)
        self.backend = ItemScorer(SemGradScorer(lm, method=method, profile=profile))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _score_batch(self.backend, batch)


def rescore(source: str | Path | Iterable[Mapping[str, Any]] | Any, *,
            model: str | None = None, method: str = "semgrad", profile: str | None = "auto",
            device: str | None = None, num_actors: int = 2, batch_size: int = 16,
            num_cpus: float = 1, num_gpus: float = 0,
            output: str | Path | None = None) -> list[dict[str, Any]]:
    """Score logged generations again on the running Ray cluster (``ray.init()`` first
    to choose one; else a local one starts) with ``num_actors`` scorer actors.

    Returns one row per record, in input order: the record's own fields, plus ``value``
    (the ``method`` score, ``None`` when it could not be computed), ``scores`` (every
    score), ``score`` (the whole :class:`~semgrad_guard.UncertaintyScore` as a dict) and
    ``error``. ``output`` also writes them as JSONL.
    """
    ray = require("ray")
    require("ray.data")
    records = _records(source)
    if not records:
        return []
    if not ray.is_initialized():
        ray.init()
    dataset = ray.data.from_items(_pipeline_rows(records))
    scored = dataset.map_batches(
        ScorerActor, fn_constructor_args=(model, method, profile, device),
        batch_size=batch_size, concurrency=num_actors, num_cpus=num_cpus, num_gpus=num_gpus)
    results: list[str | None] = [None] * len(records)
    for row in scored.iter_rows():
        results[int(row["row"])] = str(row["result"])
    out = _output_rows(records, results, method)
    if output is not None:
        with Path(output).open("w", encoding="utf-8") as handle:
            for entry in out:
                handle.write(json.dumps(entry) + "\n")
    return out
