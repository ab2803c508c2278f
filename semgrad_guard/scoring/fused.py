"""Generate and score in one go: decoding keeps the graph SemGrad needs, and the backward
pass runs right after the last token, with no second forward pass over the answer.

What the decode keeps, and why the scores are exactly the teacher-forced ones
----------------------------------------------------------------------------
SemGrad differentiates the answer's objective ``J`` with respect to the hidden states
``h_l^(a)`` of the anchor layers ``l in S`` at the anchor position ``a`` (method.md).
The features also take it at earlier offsets of the template's tail; as in the
teacher-forced pass, the graph starts at the earliest offset taken, ``e <= a``.
Attention is causal, so

* nothing at a position before ``e`` depends on any ``h_l^(k)``, ``k >= e``: those
  columns are run once without a graph (their keys and values feed the decode as plain
  numbers);
* nothing below the lowest anchor layer ``min(S)`` depends on them either: the hidden
  state of layer ``min(S)`` is cut from its past (``detach``) at every column of the
  prompt from ``e`` on and made a leaf, and the parameters are frozen, so no layer
  below it and no parameter keeps a graph;
* ``h_l^(a)`` reaches the answer only through attention in layers ``>= min(S)``: the
  keys and values those layers compute at ``a`` and at every later position (prompt
  columns after ``a`` and each decoded token) carry it, and each decode step attends to
  them. Decoding with grad mode on keeps exactly that graph: the steps' keys, values and
  logits in layers ``>= min(S)``, from ``e`` on (the decode's first forward runs the
  prompt's columns from ``e``, so one backward gives the gradient at every offset).

The logits the decode produced for each answer token are the ones a teacher-forced pass
over ``prompt + answer`` computes (the same model, the same tokens, the same causal
mask), so ``J`` is the same function of the same leaves and one backward pass gives the
same gradients. What differs is only the order of floating-point work (one column at a
time instead of all at once): the scores agree to rounding. One step of that backward
is not left to each decode step: the output head's input gradient of every step is one
product summed over the vocabulary in blocks, as in the teacher-forced pass (a
matrix-vector product per step rounds that sum some thirty times further on the default
model; :mod:`semgrad_guard.scoring.head`). The tests check 1e-4 relative on tiny float32
models (3e-7 seen) and 1e-6 on the default model in float64. In float32, on 16 SciQ
answers of the default model (``benchmarks/float32_floor.py``), the fused scores are
within 1.5e-5 relative of the two-pass ones on every score and feature (SemGrad 3.9e-6)
and within 1.4e-5 of the float64 pass, as the two-pass scores are; checked at 1e-4.
Its cost on CPU is why the library scores in two passes unless asked for this path.

Memory: the graph holds, per decode step, the attention inputs of the layers ``>=
min(S)`` (the keys and values of every earlier position from ``e`` on, as each step
saw them) and the step's logits, so it grows with the square of the answer's length in
those layers' key/value width; ``benchmarks/speed.py`` reports the peak against the
two-pass path. The bound on the answer is the scorer's ``max_response_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, GradientAccessError, ScoringError
from ..model.clock import synchronize
from ..model.frozen import frozen_for_scoring
from ..model.generation import Generation
from ..model.prompts import Prompt
from .capture import capture_hook
from .head import backward_through_head
from .result import UncertaintyScore
from .statistics import answer_statistics


def fusable(scorer: Any, generate_kwargs: dict[str, Any]) -> bool:
    """Whether the fused path can serve these settings: one answer per prompt (the score
    is per answer), and no request for the hidden-state probes (the teacher-forced pass
    collects those)."""
    return (int(generate_kwargs.get("num_return_sequences") or 1) == 1
            and not scorer.hidden_states)


def generate_and_score_fused(scorer: Any, prompts: Sequence[Prompt], *,
                             max_new_tokens: int = 128, tools: Sequence[Any] | None = None,
                             **generate_kwargs: Any
                             ) -> list[tuple[Generation, UncertaintyScore | ScoringError]]:
    """Generate answers to ``prompts`` in one left-padded batch and score each one, the
    graph kept through decoding and one backward pass after the last token.

    ``scorer`` is a :class:`~semgrad_guard.scoring.SemGradScorer`; the scores equal its
    :meth:`score_batch` of the same ids. Generation takes the keyword arguments of
    :meth:`LocalModel.generate_batch <semgrad_guard.LocalModel.generate_batch>` (greedy
    unless told to sample, stop strings, a streamer), less ``num_return_sequences``.
    An answer that cannot be scored (too long, over the context window, non-finite)
    comes back with the :class:`ScoringError` saying why, in place of its score: no
    answer is lost. The generations come back without a prefix cache: they are scored.
    """
    scorer._check_gradient_access()
    if not fusable(scorer, generate_kwargs):
        raise ConfigError("the fused path generates one answer per prompt, without "
                          "hidden-state probes; use generate_batch and score_batch")
    lm = scorer.model
    decode = _GraphDecode(scorer)
    with lm.lock, frozen_for_scoring(lm.model):
        try:
            generations = lm._generate_batch(prompts, max_new_tokens, tools, generate_kwargs,
                                             decode=decode)
            rows = [(list(g.prompt_ids), list(g.response_ids)) for g in generations]
            scores = decode.score(rows)
        finally:
            decode.release()
    return list(zip(generations, scores, strict=True))


def generate_with_graph(model: nn.Module, **kwargs: Any) -> Any:
    """``model.generate`` with grad mode as the caller set it (transformers runs it under
    ``torch.no_grad()``: its undecorated function is called)."""
    generate = getattr(getattr(type(model), "generate", None), "__wrapped__", None)
    if generate is None:
        raise GradientAccessError(
            f"model without gradient access: {type(model).__name__}.generate cannot run "
            f"with a graph")
    return generate(model, **kwargs)


class _GraphDecode:
    """One fused batch: decodes with the graph (as ``LocalModel._generate_batch``'s
    decoder), then scores the answers it produced."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.captured: dict[int, torch.Tensor] = {}
        self.head: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.logits: tuple[torch.Tensor, ...] = ()
        self.width = self.split = 0
        self.offsets: tuple[int, ...] = ()
        self.seconds = {"prefix": 0.0, "decode": 0.0}

    def release(self) -> None:
        """Drop every tensor of the graph."""
        self.captured.clear()
        self.head.clear()
        self.logits = ()

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor,
                 kwargs: dict[str, Any]) -> Any:
        scorer, anchor = self.scorer, self.scorer.anchor
        device = input_ids.device
        t0 = time.perf_counter()
        width = input_ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Columns before the earliest offset taken (the anchor's or a feature's) cannot
        # depend on it: one pass, no graph. The decode's graph starts there.
        offsets = tuple(k for k in scorer.feature_offsets if width + k >= 0)
        split = width + offsets[-1]
        past = scorer._prefix(input_ids[:, :split], mask[:, :split], positions[:, :split])
        synchronize(device)
        t1 = time.perf_counter()

        def capture_head(_module: nn.Module, inputs: Any, output: Any) -> None:
            self.head.append((inputs[0], output))

        # Hooks that fire for this call only (the model may serve other callers); the
        # first call's output is the prompt's columns from the split on.
        hooks: list[tuple[nn.Module, Any]] = [
            (scorer.model.layout.module_producing(layer),
             capture_hook(layer, anchor.layers[0], self.captured, first_only=True))
            for layer in anchor.layers]
        hooks.append((scorer.model.layout.lm_head, capture_head))
        with scorer.model.forward_hooks(hooks):
            out = generate_with_graph(
                scorer.model.model, input_ids=input_ids, attention_mask=mask,
                past_key_values=past, **{**kwargs, "return_dict_in_generate": True,
                                         "output_logits": True})
        synchronize(device)
        self.seconds = {"prefix": t1 - t0, "decode": time.perf_counter() - t1}
        self.logits = tuple(out.logits)
        # The cache holds the graph; generations scored here need no prefix cache.
        out.past_key_values = None
        self.width, self.split, self.offsets = width, split, offsets
        return out

    def score(self, rows: Sequence[tuple[list[int], list[int]]]
              ) -> list[UncertaintyScore | ScoringError]:
        """Every row's scores, or the :class:`ScoringError` saying why it has none."""
        failed: dict[int, ScoringError] = {}
        for i, (p, r) in enumerate(rows):
            try:
                self.scorer._validate(p, r)
            except ScoringError as exc:
                failed[i] = exc
        valid = [i for i in range(len(rows)) if i not in failed]
        scored: list[UncertaintyScore | ScoringError] = []
        if valid:
            try:
                scored = self._score(rows, valid)
            except ScoringError as exc:
                scored = [exc] * len(valid)
        it = iter(scored)
        return [failed[i] if i in failed else next(it) for i in range(len(rows))]

    def _score(self, rows: Sequence[tuple[list[int], list[int]]], valid: Sequence[int]
               ) -> list[UncertaintyScore | ScoringError]:
        """The backward pass from the objective of the ``valid`` rows' answers, and every
        score of each of them."""
        scorer, anchor = self.scorer, self.scorer.anchor
        lowest = anchor.layers[0]
        if lowest not in self.captured or not self.captured[lowest].requires_grad:
            raise GradientAccessError(
                f"model without gradient access: hidden state {lowest} of "
                f"{scorer.model.name} was not produced by a differentiable forward pass")
        keep = max(len(r) for _, r in rows)
        device = self.logits[0].device
        t0 = time.perf_counter()
        targets = torch.zeros((len(rows), keep), dtype=torch.long)
        answer = torch.zeros((len(rows), keep), dtype=torch.bool)
        for i, (_, r) in enumerate(rows):
            targets[i, :len(r)] = torch.tensor(r)
            answer[i, :len(r)] = True
        answer_d = answer.to(device)
        stats = answer_statistics(torch.stack(self.logits[:keep], dim=1), targets.to(device),
                                  answer_d)
        wanted = [self.captured[layer] for layer in anchor.layers]
        head = self.head[:keep]
        chosen = torch.tensor(valid, device=device)
        objective = stats.objective.index_select(0, chosen).sum()
        at_head, grads = backward_through_head(
            objective, scorer.model.layout.lm_head, [output for _, output in head],
            [h for h, _ in head], wanted)
        synchronize(device)
        t1 = time.perf_counter()

        with torch.no_grad():
            head_grad = None
            if scorer.hybrid:
                head_grad = (torch.cat([g[:, -1:] for g in at_head], 1),
                             torch.cat([h[:, -1:] for h, _ in head], 1))
            measured = scorer._measure(
                stats, grads, anchor.offset - self.offsets[-1],
                [self.width + k - self.split for k in self.offsets], self.offsets,
                head_grad, answer_d, [len(p) for p, _ in rows])
        synchronize(device)
        t2 = time.perf_counter()
        batch = len(rows)
        timings = {"forward": self.seconds["prefix"] / batch, "backward": (t1 - t0) / batch,
                   "aggregate": (t2 - t1) / batch,
                   "total": (self.seconds["prefix"] + t2 - t0) / batch,
                   "decode_with_graph": self.seconds["decode"] / batch,
                   "batch_size": float(batch)}
        results: list[UncertaintyScore | ScoringError] = []
        for i in valid:  # a row with a non-finite score fails alone
            try:
                results += scorer._results([rows[i]], measured.row(i), timings, False)
            except ScoringError as exc:
                results.append(exc)
        return results
