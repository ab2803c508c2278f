"""The anchor search: Semantic Preservation Score (SPS) over prompt offsets and layers.

For a candidate (offset ``k``, layer ``l``), the hidden states of every paraphrase of
every calibration question are collected at that prompt position (forward passes only).
``SPS = (s_same - s_diff) / pooled_std``, where ``s_same`` is the mean cosine similarity
between paraphrases of one question and ``s_diff`` between paraphrases of different
questions. The anchor offset maximises the mean SPS over the layer set (method.md).

Only offsets inside the fixed tail of the prompt template are eligible: an offset
whose token differs between prompts would sit inside the question text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .._version import __version__
from ..errors import CalibrationError
from ..model.local_model import LocalModel
from ..model.prompts import common_tail_length, qa_prompt
from ..model.vocabulary import tokenizer_fingerprint
from ..scoring.profile import ModelProfile, model_fingerprint

LayerRule = Literal["upper-half", "best-block"]


@dataclass(frozen=True)
class SPSTable:
    """SPS of every candidate: ``values[i, j]`` is offset ``offsets[i]``, layer ``layers[j]``."""

    offsets: tuple[int, ...]
    layers: tuple[int, ...]
    values: np.ndarray
    eligible: tuple[int, ...]

    def as_dict(self) -> dict[str, float]:
        return {f"{k},{layer}": round(float(self.values[i, j]), 6)
                for i, k in enumerate(self.offsets) for j, layer in enumerate(self.layers)}

    def mean_over(self, layers: Sequence[int]) -> dict[int, float]:
        cols = [self.layers.index(layer) for layer in layers]
        return {k: float(self.values[i, cols].mean()) for i, k in enumerate(self.offsets)}


def template_tail_length(lm: LocalModel, prompts: Sequence[list[int]]) -> int:
    """How many final prompt tokens belong to the template, never to the question.

    Structural (two unrelated questions rendered through the template) and empirical
    (the common tail of every calibration prompt) at once: the smaller wins.
    """
    structural = lm.prompt_format.fixed_tail_length(lm.tokenizer)
    empirical = min(common_tail_length(prompts[0], p) for p in prompts[1:]) \
        if len(prompts) > 1 else structural
    return min(structural, empirical)


def collect_states(lm: LocalModel, prompts: Sequence[list[int]], window: int,
                   batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """Hidden states ``[prompt, offset, layer, dim]`` at the last ``window`` positions,
    for layers ``1 .. L-1`` (forward passes only, no generation)."""
    model = lm.model
    n_layers = lm.layout.num_layers
    out_states = []
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    bar = tqdm(total=len(prompts), desc="anchor search: forward passes", disable=not progress)
    chunks: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with lm.lock:  # the model's one way in, shared with generation and scoring
                out = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            position_ids=positions.to(lm.device), output_hidden_states=True,
                            use_cache=False, logits_to_keep=1)
            hidden = torch.stack(out.hidden_states[1:n_layers], dim=2)  # [B, W, L-1, d]
            tail = hidden[:, -window:].flip(1).float().cpu()  # offset -1 first
            for row, i in enumerate(idx):
                chunks[i] = tail[row]
            bar.update(len(idx))
    bar.close()
    for i in range(len(prompts)):
        out_states.append(chunks[i])
    return torch.stack(out_states)


def sps_table(states: torch.Tensor, groups: Sequence[int], eligible: int) -> SPSTable:
    """SPS for every (offset, layer) from states ``[prompt, offset, layer, dim]``."""
    n, window, n_layers, _ = states.shape
    group = torch.tensor(list(groups))
    same = group[:, None] == group[None, :]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    same_pairs, diff_pairs = same & upper, ~same & upper
    if not same_pairs.any() or not diff_pairs.any():
        raise CalibrationError("the anchor search needs at least two questions with two or "
                               "more wordings each")
    values = np.zeros((window, n_layers))
    for k in range(window):
        for layer in range(n_layers):
            x = torch.nn.functional.normalize(states[:, k, layer], dim=-1)
            sim = x @ x.T
            a, b = sim[same_pairs], sim[diff_pairs]
            pooled = (((a.numel() - 1) * a.var() + (b.numel() - 1) * b.var())
                      / (a.numel() + b.numel() - 2)).sqrt()
            values[k, layer] = float((a.mean() - b.mean()) / pooled.clamp(min=1e-12))
    offsets = tuple(-(k + 1) for k in range(window))
    return SPSTable(offsets, tuple(range(1, n_layers + 1)), values,
                    tuple(-(k + 1) for k in range(min(eligible, window))))


def search_anchor(lm: LocalModel, questions: Sequence[Sequence[str]], *, window: int = 8,
                  layer_rule: LayerRule = "upper-half", batch_size: int = 16,
                  data: dict[str, object] | None = None, progress: bool = True
                  ) -> tuple[ModelProfile, SPSTable]:
    """Calibrate the anchor of ``lm`` on groups of wordings of the same question.

    ``questions`` is a list of groups; each group holds one question and its
    paraphrases. Every wording is formatted as production formats it (the reference
    question-answering prompt in the model's prompt format).
    """
    groups = [list(g) for g in questions if len(g) >= 2]
    if len(groups) < 2:
        raise CalibrationError("the anchor search needs at least two questions with "
                               "paraphrases; got " + str(len(groups)))
    prompts, labels = [], []
    for gi, group in enumerate(groups):
        for wording in group:
            prompts.append(lm.prompt_ids(qa_prompt(wording)))
            labels.append(gi)
    tail = template_tail_length(lm, prompts)
    if tail == 0:
        raise CalibrationError("the prompt format leaves no fixed template token after the "
                               "question, so there is no anchor outside the question text")
    states = collect_states(lm, prompts, window, batch_size, progress)
    table = sps_table(states, labels, tail)
    upper = lm.layout.upper_half()
    best = choose_offset(table, upper)
    layers = upper if layer_rule == "upper-half" else _best_block(table, best, len(upper))
    prompt = prompts[0]
    profile = ModelProfile(
        model_name=lm.name, model_fingerprint=model_fingerprint(lm.model),
        template_fingerprint=lm.prompt_format.fingerprint(lm.tokenizer), anchor_offset=best,
        layers=tuple(layers), anchor_token=lm.tokenizer.decode([prompt[len(prompt) + best]]),
        layer_rule=layer_rule, sps=table.as_dict(), fixed_suffix_length=tail,
        data={**(data or {}), "questions": len(groups), "wordings": len(prompts)},
        library_version=__version__, tokenizer_fingerprint=tokenizer_fingerprint(lm.tokenizer))
    return profile, table


def choose_offset(table: SPSTable, layers: Sequence[int]) -> int:
    """``k* = argmax_k mean_{l in layers} SPS(k, l)`` over the eligible offsets."""
    by_offset = table.mean_over(layers)
    return max(table.eligible, key=lambda k: by_offset[k])


def _best_block(table: SPSTable, offset: int, width: int) -> tuple[int, ...]:
    row = table.values[table.offsets.index(offset)]
    starts = range(0, len(table.layers) - width + 1)
    best = max(starts, key=lambda s: row[s:s + width].mean())
    return tuple(table.layers[best:best + width])


def format_table(table: SPSTable, layers: Sequence[int], lm: LocalModel,
                 chosen: int | None = None) -> str:
    """A plain-text SPS table: one row per offset, mean SPS over ``layers``, with the
    token each offset points at in a sample prompt."""
    means = table.mean_over(layers)
    sample = lm.prompt_ids(qa_prompt("What is the boiling point of water?"))
    lines = [f"{'offset':>6}  {'token':<18} {'mean SPS':>9}  eligible"]
    for k in table.offsets:
        mark = "yes" if k in table.eligible else "no (question text)"
        token = repr(lm.tokenizer.decode([sample[k]])) if -k <= len(sample) else ""
        arrow = "  <- anchor" if k == chosen else ""
        lines.append(f"{k:>6}  {token:<18} {means[k]:>9.3f}  {mark}{arrow}")
    return "\n".join(lines)
