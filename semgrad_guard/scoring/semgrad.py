"""SemGrad, HybridGrad and the likelihood baselines from one forward/backward pass."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from .._deprecation import warn_renamed
from ..errors import (
    ConfigError,
    ContextWindowError,
    EmptyResponseError,
    GradientAccessError,
    NonFiniteScoreError,
    ResponseTooLongError,
    ScoringError,
    TokenizerMismatchError,
)
from ..model.batching import RowFailure, each_alone_after_failure, settings_key
from ..model.clock import synchronize
from ..model.frozen import frozen_for_scoring
from ..model.generation import Generation, PrefixCache
from ..model.local_model import LocalModel
from ..model.prompts import Prompt
from ..model.vocabulary import check_fingerprint, check_special_tokens
from .capture import capture_hook
from .fused import fusable, generate_and_score_fused
from .head import backward_through_head
from .profile import ModelProfile, ProfileStore, model_fingerprint
from .result import AUTO_SCORE, SCORE_NAMES, HiddenStates, UncertaintyScore
from .statistics import AnswerStatistics, anchor_gradients, answer_statistics, features
from .upper import given_outputs, runs_upper_pass, upper_forward

# Vocabulary rows per matmul when forming the lm_head gradient (memory bound).
_VOCAB_CHUNK = 8192
# Logit elements (batch x kept positions x vocabulary) one scoring pass may hold.
_LOGIT_BUDGET = 48_000_000
# Positions a chunk's graph may span, as a multiple of its rows' own.
_PADDING_SLACK = 1.25
#: Longest answer a scorer takes by default (tokens); benchmarks/scoring_memory.py
#: measures the memory a scored answer takes against its length.
DEFAULT_MAX_RESPONSE_TOKENS = 1024


def hybridgrad(semgrad: Any, pg: Any, alpha: Any) -> Any:
    """HybridGrad (method.md): ``alpha * PG + (1 - alpha) * SemGrad``, where ``PG`` is the
    output projection's gradient magnitude and ``alpha = exp(-mean token entropy)``.

    Works on floats and on tensors alike.

    >>> hybridgrad(semgrad=0.5, pg=1.0, alpha=0.5)
    0.75
    """
    return alpha * pg + (1 - alpha) * semgrad


@dataclass(frozen=True)
class _Measured:
    """The named features of a batch's rows and, with HybridGrad, its parts per row."""

    features: list[dict[str, float]]
    pg: list[float] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    hybrid: list[float] | None = None

    def row(self, i: int) -> _Measured:
        """Row ``i`` alone."""
        if self.hybrid is None:
            return _Measured([self.features[i]])
        return _Measured([self.features[i]], [self.pg[i]], [self.alpha[i]], [self.hybrid[i]])


@dataclass(frozen=True)
class Anchor:
    """Where the gradient is taken: a prompt offset (negative) and hidden-state layers."""

    offset: int
    layers: tuple[int, ...]
    source: str
    profile_id: str | None = None


class SemGradScorer:
    """Scores answers of a :class:`LocalModel` with SemGrad and its siblings.

    One teacher-forced forward pass and one backward pass that stops at the lowest
    anchor layer give, for every answer in a batch, SemGrad, HybridGrad (with its
    components) and the likelihood baselines. No parameter gradients are formed; the
    user's model is left exactly as it was.

    Two ways in: :meth:`generate_and_score` generates an answer and scores it;
    :meth:`score_batch` scores answers you already have (generations or ids), and
    :meth:`score_generation` / :meth:`score_text` score one (the
    :class:`~semgrad_guard.scoring.Scorer` protocol the guard calls).

    >>> scorer = SemGradScorer(LocalModel.load())
    >>> generation, score = scorer.generate_and_score("What is the chemical symbol of gold?")
    >>> score.method, score.direction
    ('semgrad', 'higher_is_more_uncertain')

    ``profile`` is ``"auto"`` (use the cached calibrated profile of this model and
    prompt format, else the documented default anchor), ``None`` (always the default),
    or a :class:`ModelProfile`. ``anchor_offset`` / ``layers`` override both.

    The same pass gives each answer's named features (``score.features``): the anchor
    gradient's L1 and L2 norm in every anchor layer at every offset of
    ``feature_offsets`` (``"auto"``: every offset of the prompt format's fixed tail after
    the question, plus the anchor's), and the likelihood statistics. The pass's graph
    starts at the earliest of these offsets; ``feature_offsets=()`` starts it at the
    anchor, the cheapest pass (without the gradient features a learned score reads).
    ``hidden_states=True`` also keeps every layer's hidden state at the anchor and at
    the last position of the pass (``score.hidden_states``, for probes).

    With a profile fitted on labelled answers (``semgrad-guard calibrate --labelled``),
    every score also carries ``scores["learned"]``, the learned probability of error
    (``method="learned"``, or ``"auto"``, headlines it), and ``out_of_domain`` says when
    it came from the robust fallback; it needs the profile's own anchor.

    ``max_response_tokens`` bounds the answers scored (memory grows linearly with the
    answer: about 1.5 MiB per token on the default model, measured by
    ``benchmarks/scoring_memory.py``); longer ones raise
    ``ResponseTooLongError``.
    ``None`` lifts the bound.
    """

    def __init__(self, model: LocalModel, *, method: str = "semgrad",
                 profile: ModelProfile | str | None = "auto", anchor_offset: int | None = None,
                 layers: Sequence[int] | None = None, hybrid: bool = True,
                 batch_size: int = 16, profile_store: ProfileStore | None = None,
                 feature_offsets: Sequence[int] | Literal["auto"] = "auto",
                 hidden_states: bool = False,
                 max_response_tokens: int | None = DEFAULT_MAX_RESPONSE_TOKENS) -> None:
        if method not in (*SCORE_NAMES, AUTO_SCORE):
            raise ConfigError(f"unknown score method {method!r}; allowed: "
                              f"{', '.join(SCORE_NAMES)}, {AUTO_SCORE}")
        if method == "hybridgrad" and not hybrid:
            raise ConfigError("method 'hybridgrad' needs hybrid=True")
        if max_response_tokens is not None and max_response_tokens < 1:
            raise ConfigError(f"max_response_tokens must be at least 1 (or None), got "
                              f"{max_response_tokens}")
        self.model = model
        self.method = method
        self.hybrid = hybrid
        self.batch_size = batch_size
        self.hidden_states = hidden_states
        self.max_response_tokens = max_response_tokens
        check_special_tokens(model.model, model.tokenizer)
        self.profile = self._resolve_profile(profile, profile_store)
        if self.profile is not None:
            check_fingerprint(self.profile.tokenizer_fingerprint, model.tokenizer,
                              f"model profile {self.profile.profile_id}")
        self.anchor = self._resolve_anchor(anchor_offset, layers)
        self.feature_offsets = self._resolve_offsets(feature_offsets)
        # Generation keeps the lowest anchor layer's hidden state: scoring a generation
        # then runs only the blocks above it (scoring/upper.py).
        self._upper = (not hidden_states and self.anchor.layers[0] >= 1
                       and runs_upper_pass(model.model))
        if self._upper:
            model.keep_hidden_state(self.anchor.layers[0], -self.feature_offsets[-1])
            model.keep_layer_outputs(self.anchor.layers[0], -self.feature_offsets[-1])
        # ... and the outputs of the linear layers above it, which the pass then takes
        # instead of computing them again.
        self._given_outputs = self._upper
        # The learned score reads features taken at the profile's anchor: another anchor
        # would feed it numbers it was not fitted on.
        self.learned = self.profile.learned if self.profile is not None \
            and self.anchor.source == "profile" else None
        # ... and gradient norms at offsets this scorer takes (feature_offsets).
        if self.learned is not None and not self._offsets_cover(self.learned.features):
            self.learned = None
        if method == AUTO_SCORE:
            method = self.method = "learned"
        if method == "learned" and self.learned is None:
            raise ConfigError(
                "score 'learned' needs a model profile fitted on labelled answers "
                "(semgrad-guard calibrate --labelled), used with its own anchor and "
                "feature offsets; "
                + ("this model has no profile" if self.profile is None else
                   "this profile has none" if self.profile.learned is None else
                   "this scorer's anchor or feature_offsets differ from the profile's"))

    # -- configuration -------------------------------------------------------------------
    def _resolve_profile(self, profile: ModelProfile | str | None,
                         store: ProfileStore | None) -> ModelProfile | None:
        if profile is None or isinstance(profile, ModelProfile):
            return profile
        if profile != "auto":
            return ModelProfile.load(profile)
        store = store or ProfileStore()
        template_fp = self.model.prompt_format.fingerprint(self.model.tokenizer)
        return store.find(model_fingerprint(self.model.model), template_fp)

    def _resolve_anchor(self, offset: int | None, layers: Sequence[int] | None) -> Anchor:
        layout = self.model.layout
        if self.profile is not None:
            base = Anchor(self.profile.anchor_offset, tuple(self.profile.layers), "profile",
                          self.profile.profile_id)
        else:
            base = Anchor(self.model.prompt_format.default_anchor_offset(self.model.tokenizer),
                          layout.upper_half(), "default")
        if offset is not None or layers is not None:
            base = Anchor(offset if offset is not None else base.offset,
                          tuple(layers) if layers is not None else base.layers, "explicit")
        if base.offset >= 0:
            raise ConfigError(f"anchor_offset must be negative (-1 is the last prompt token), "
                              f"got {base.offset}")
        if not base.layers:
            raise ConfigError("the anchor layer set is empty")
        for layer in base.layers:
            layout.module_producing(layer)  # raises on a layer out of range
        return Anchor(base.offset, tuple(sorted(set(base.layers))), base.source, base.profile_id)

    def _resolve_offsets(self, requested: Sequence[int] | str) -> tuple[int, ...]:
        if isinstance(requested, str):
            if requested != "auto":
                raise ConfigError(f"feature_offsets must be 'auto' or a list of negative "
                                  f"offsets, got {requested!r}")
            tail = self.profile.fixed_suffix_length if self.profile is not None else 0
            if tail <= 0:
                tail = self.model.prompt_format.fixed_tail_length(self.model.tokenizer)
            offsets = set(range(-1, -tail - 1, -1))
        else:
            offsets = {int(k) for k in requested}
            if any(k >= 0 for k in offsets):
                raise ConfigError(f"feature_offsets must be negative (-1 is the last prompt "
                                  f"token), got {sorted(offsets)}")
        return tuple(sorted(offsets | {self.anchor.offset}, reverse=True))

    def _offsets_cover(self, names: Sequence[str]) -> bool:
        """Whether every gradient feature in ``names`` (``grad_l1/<offset>/...``,
        ``grad_l2_mean/<offset>``) is at an offset this scorer's pass takes."""
        needed = {int(name.split("/")[1]) for name in names if name.startswith("grad_")}
        return needed <= set(self.feature_offsets)

    # -- public entry points ---------------------------------------------------------------
    # Calls of one answer go through the model's batcher: concurrent callers share one
    # padded batch, each getting its own row (a row that cannot be scored fails alone).
    def generate_and_score(self, prompt: Prompt, *, fused: bool = False,
                           **generate_kwargs: Any) -> tuple[Generation, UncertaintyScore]:
        """Generate an answer (greedily unless told to sample) and score it by its exact
        ids.

        By default it generates, then scores with a teacher-forced pass that reuses
        generation's prompt cache (two passes). ``fused=True`` instead decodes with the
        graph SemGrad needs and runs the backward pass right after the last token, with
        no second forward pass over the answer (:mod:`semgrad_guard.scoring.fused`).

        Why two passes are the default: the fused path is no more exact and not faster
        on CPU. Both compute the same function (in float64 on the default model they
        agree within 1e-6), and in float32 both round as little: on 16 SciQ answers of
        the default model (``benchmarks/float32_floor.py``) the two-pass score stays
        within 1.4e-5 relative of its float64 value (any score or feature; within 1.3e-5
        of itself alone, in a padded batch or from generation's cache), and so does the
        fused one (SemGrad itself: 6.3e-6 and 6.7e-6). On CPU
        (``benchmarks/speed.md``: ``speed.py --questions 16 --single 4
        --max-new-tokens 32 --throughput 1,8 --clock cpu``, one torch thread) scoring
        adds 0.69x of generation fused against 0.24x two-pass one answer at a time, and
        0.74x against 0.23x at batch 16 (the second pass running only the blocks above
        the lowest anchor layer and none of their linear layers, from what generation
        kept; the keeping included): carrying the graph through the decode steps costs
        more than the forward pass it saves. Settings
        the fused path does not take (``num_return_sequences``, a scorer keeping hidden
        states) use the two passes.
        """
        self._check_gradient_access()
        return self.model.batcher.call(  # type: ignore[no-any-return]
            self._rows_for(fused, generate_kwargs), (prompt, generate_kwargs),
            settings_key({**generate_kwargs, "fused": fused}))

    async def agenerate_and_score(self, prompt: Prompt, *, fused: bool = False,
                                  **generate_kwargs: Any
                                  ) -> tuple[Generation, UncertaintyScore]:
        """:meth:`generate_and_score` for asyncio: awaits without blocking the loop."""
        self._check_gradient_access()
        return await self.model.batcher.acall(  # type: ignore[no-any-return]
            self._rows_for(fused, generate_kwargs), (prompt, generate_kwargs),
            settings_key({**generate_kwargs, "fused": fused}))

    def _rows_for(self, fused: bool, generate_kwargs: dict[str, Any]) -> Any:
        if fused and fusable(self, generate_kwargs):
            return self._generate_and_score_fused_rows
        return self._generate_and_score_rows

    def _generate_and_score_fused_rows(self, items: list[tuple[Prompt, dict[str, Any]]]
                                       ) -> list[tuple[Generation, UncertaintyScore]
                                                 | RowFailure]:
        """One batch of callers' prompts, generated and scored in one fused pass."""
        pairs = generate_and_score_fused(self, [prompt for prompt, _ in items], **items[0][1])
        return [RowFailure(s) if isinstance(s, ScoringError) else (g, s) for g, s in pairs]

    def generate_and_score_batch(self, prompts: Sequence[Prompt], *, fused: bool = False,
                                 **generate_kwargs: Any
                                 ) -> list[tuple[Generation, UncertaintyScore | ScoringError]]:
        """:meth:`generate_and_score` of many prompts in one left-padded batch (two
        passes unless ``fused=True``: the batch is generated, then scored in one pass that
        reuses generation's prompt caches, which are released after). An answer that
        cannot be scored comes with the :class:`ScoringError` saying why in place of its
        score (the others are scored: after a failed pass, each answer is scored alone).
        With ``num_return_sequences`` every sequence comes back, scored, in order."""
        if fused and fusable(self, generate_kwargs):
            return generate_and_score_fused(self, prompts, **generate_kwargs)
        generations = self.model.generate_batch(prompts, **generate_kwargs)
        scores = self._score_and_release(generations)
        return [(g, cast(ScoringError, s.error) if isinstance(s, RowFailure) else s)
                for g, s in zip(generations, scores, strict=True)]

    def score_generation(self, generation: Generation, *, release: bool = True
                         ) -> UncertaintyScore:
        """Score a generation by its exact ids, reusing its prompt's keys and values."""
        self._check_gradient_access()
        try:
            return self.model.batcher.call(self._score_generations, generation)  # type: ignore[no-any-return]
        finally:
            if release and generation.prefix_cache is not None:
                generation.prefix_cache.release()

    async def ascore_generation(self, generation: Generation, *, release: bool = True
                                ) -> UncertaintyScore:
        """:meth:`score_generation` for asyncio: awaits without blocking the loop."""
        self._check_gradient_access()
        try:
            return await self.model.batcher.acall(self._score_generations, generation)  # type: ignore[no-any-return]
        finally:
            if release and generation.prefix_cache is not None:
                generation.prefix_cache.release()

    def score_text(self, prompt: Prompt, response: str) -> UncertaintyScore:
        """Score an answer known only as text: re-tokenised, and flagged as such."""
        if not response.strip():
            raise EmptyResponseError(
                "empty answer text: there is no answer to score (only the end-of-turn "
                "token would be scored)")
        self._check_gradient_access()
        return self.model.batcher.call(self._score_texts, (prompt, response))  # type: ignore[no-any-return]

    def score_batch(self, items: Sequence[Generation | tuple[Sequence[int], Sequence[int]]],
                    *, retokenized: bool = False, release: bool = True
                    ) -> list[UncertaintyScore]:
        """Score answers you already have, many at a time: generations (by their exact
        ids, reusing the keys and values generation kept for their prompts, so that the
        prompt is not run again) or ``(prompt_ids, response_ids)`` pairs. Rows are
        batched by length and score as they would alone.

        ``release`` then drops the generations' caches, so that generations kept for later
        do not hold them; pass ``False`` when another scorer will score them next.
        ``retokenized`` flags every result as scored from re-tokenised text.
        """
        rows: list[tuple[list[int], list[int]]] = []
        caches: list[PrefixCache | None] = []
        for item in items:
            if isinstance(item, Generation):
                rows.append((list(item.prompt_ids), list(item.response_ids)))
                caches.append(item.prefix_cache)
            else:
                prompt_ids, response_ids = item
                rows.append((list(map(int, prompt_ids)), list(map(int, response_ids))))
                caches.append(None)
        try:
            return self._score_rows(rows, caches, retokenized)
        finally:
            if release:
                for cache in caches:
                    if cache is not None:
                        cache.release()

    # -- the work of one batch of callers -----------------------------------------------------
    def _generate_and_score_rows(self, items: list[tuple[Prompt, dict[str, Any]]]
                                 ) -> list[tuple[Generation, UncertaintyScore] | RowFailure]:
        """Generate answers to the callers' prompts (they share their settings) in one
        batch, then score them in one pass (an answer that cannot be scored fails its own
        caller, and the others are not generated again). With several return sequences each
        caller gets its prompt's first, as :meth:`LocalModel.generate` gives it. The
        generations come back without their prompt's cache, as from
        :meth:`score_generation`."""
        generations = self.model.generate_batch([prompt for prompt, _ in items], **items[0][1])
        generations = generations[::len(generations) // len(items)]
        scores = self._score_and_release(generations)
        return [s if isinstance(s, RowFailure) else (g, s)
                for g, s in zip(generations, scores, strict=True)]

    def _score_and_release(self, generations: list[Generation]
                           ) -> list[UncertaintyScore | RowFailure]:
        """Score generations in one pass, reusing their prompts' caches, then release the
        caches. When the pass fails, each is scored again alone: only the answers that
        cannot be scored fail (a :class:`RowFailure` holding the :class:`ScoringError`)."""
        try:
            return each_alone_after_failure(self._score_generations, generations,
                                            ScoringError)
        finally:
            for generation in generations:
                if generation.prefix_cache is not None:
                    generation.prefix_cache.release()

    def _score_generations(self, generations: list[Generation]
                           ) -> list[UncertaintyScore | RowFailure]:
        return self._score_each(generations, retokenized=False)

    def _score_texts(self, items: list[tuple[Prompt, str]]) -> list[UncertaintyScore | RowFailure]:
        return self._score_each([(self.model.prompt_ids(prompt), self.model.response_ids(text))
                                 for prompt, text in items], retokenized=True)

    def _score_each(self, items: Sequence[Generation | tuple[Sequence[int], Sequence[int]]],
                    retokenized: bool) -> list[UncertaintyScore | RowFailure]:
        """:meth:`score_batch` of the rows that can be scored; the others fail alone.
        Caches are kept: each caller releases its own."""
        failed: dict[int, RowFailure] = {}
        valid = []
        for i, item in enumerate(items):
            prompt, response = ((item.prompt_ids, item.response_ids)
                                if isinstance(item, Generation) else item)
            try:
                self._validate(list(prompt), list(response))
            except ScoringError as exc:
                failed[i] = RowFailure(exc)
            else:
                valid.append(item)
        scored = iter(self.score_batch(valid, retokenized=retokenized, release=False)
                      if valid else [])
        return [failed[i] if i in failed else next(scored) for i in range(len(items))]

    # -- the old entry points, for one release ------------------------------------------------
    def score(self, prompt_ids: Sequence[int], response_ids: Sequence[int], *,
              retokenized: bool = False) -> UncertaintyScore:
        """Deprecated: ``score_batch([(prompt_ids, response_ids)])[0]``."""
        warn_renamed("SemGradScorer.score(prompt_ids, response_ids)",
                     "SemGradScorer.score_batch([(prompt_ids, response_ids)])[0]")
        return self.score_batch([(prompt_ids, response_ids)], retokenized=retokenized)[0]

    def score_generations(self, generations: Sequence[Generation], *, release: bool = True
                          ) -> list[UncertaintyScore]:
        """Deprecated: :meth:`score_batch`, which takes generations too."""
        warn_renamed("SemGradScorer.score_generations()", "SemGradScorer.score_batch()")
        return self.score_batch(generations, release=release)

    def _score_rows(self, rows: list[tuple[list[int], list[int]]],
                    caches: list[PrefixCache | None], retokenized: bool
                    ) -> list[UncertaintyScore]:
        for p, r in rows:
            self._validate(p, r)
        results: list[UncertaintyScore | None] = [None] * len(rows)
        # The pass with a graph spans every row of a chunk from the earliest offset taken
        # to the end of the chunk's longest answer: rows go in order of answer length, and
        # a chunk closes before padding would inflate that part by over a quarter.
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i][1]), len(rows[i][0])))
        vocab = self.model.layout.vocab_rows
        tail = 1 - self.feature_offsets[-1]  # graph positions besides the answer's own
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and end - start < self.batch_size:
                members = order[start:end + 1]
                widest = len(rows[order[end]][1])
                if len(members) * widest * vocab > _LOGIT_BUDGET:
                    break
                actual = sum(len(rows[i][1]) + tail for i in members)
                if len(members) * (widest + tail) > _PADDING_SLACK * actual:
                    break
                end += 1
            chunk = order[start:end]
            scored = self._score_chunk([rows[i] for i in chunk], retokenized,
                                       [caches[i] for i in chunk])
            for i, s in zip(chunk, scored, strict=True):
                results[i] = s
            start = end
        return [r for r in results if r is not None]

    # -- checks ------------------------------------------------------------------------------
    def _validate(self, prompt: list[int], response: list[int]) -> None:
        layout = self.model.layout
        if not response:
            raise EmptyResponseError("empty response: there is no answer token to score")
        if not prompt:
            raise ScoringError("empty prompt: SemGrad needs the prompt the answer responds to")
        if len(prompt) < -self.anchor.offset:
            raise ScoringError(f"prompt of {len(prompt)} tokens is shorter than the anchor "
                               f"offset {self.anchor.offset}")
        if self.max_response_tokens is not None and len(response) > self.max_response_tokens:
            raise ResponseTooLongError(
                f"response of {len(response)} tokens is longer than max_response_tokens="
                f"{self.max_response_tokens}; scoring memory grows with the answer's length "
                f"(raise the bound, or pass None, to score it anyway)")
        total = len(prompt) + len(response)
        if layout.context_window is not None and total > layout.context_window:
            raise ContextWindowError(
                f"prompt over the context window: {len(prompt)} prompt + {len(response)} "
                f"response tokens = {total} > {layout.context_window} of {self.model.name}")
        bad = [t for t in (*prompt, *response) if t < 0 or t >= layout.vocab_rows]
        if bad:
            raise TokenizerMismatchError(
                f"mismatched tokenizer: token id {bad[0]} is outside the model's embedding "
                f"of {layout.vocab_rows} rows")
        tok_size = len(self.model.tokenizer)
        if tok_size > layout.vocab_rows:
            raise TokenizerMismatchError(
                f"mismatched tokenizer: it has {tok_size} tokens but the model's embedding "
                f"has {layout.vocab_rows} rows")
        if not self.model.tokenizer.decode(response, skip_special_tokens=True).strip():
            raise EmptyResponseError(
                f"no answer: the response's {len(response)} token"
                f"{'s' if len(response) != 1 else ''} hold no text (only whitespace, newlines "
                f"or special tokens), and an empty answer is not scored as an answer")

    @staticmethod
    def _check_gradient_access() -> None:
        if torch.is_inference_mode_enabled():
            raise GradientAccessError(
                "model without gradient access: scoring was called inside "
                "torch.inference_mode(), where no backward pass can run")

    # -- the pass ------------------------------------------------------------------------------
    def _score_chunk(self, rows: list[tuple[list[int], list[int]]], retokenized: bool,
                     caches: Sequence[PrefixCache | None]) -> list[UncertaintyScore]:
        self._check_gradient_access()
        lm, layout, anchor = self.model, self.model.layout, self.anchor
        device = lm.device
        lengths = [len(r) for _, r in rows]
        prompt_width, keep, batch = max(len(p) for p, _ in rows), max(lengths), len(rows)
        # Prompts are left-padded to end together at `prompt_width`, as in generation, so
        # every row's anchor sits in the same column and generation's keys and values for
        # the columns before it can be reused. Teacher forcing: y_T is predicted, never
        # fed, so a row's input stops at y_{T-1}; shorter answers are right-padded.
        width = prompt_width + keep - 1
        ids = torch.full((batch, width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        targets = torch.zeros((batch, keep), dtype=torch.long)
        answer = torch.zeros((batch, keep), dtype=torch.bool)
        for i, (p, r) in enumerate(rows):
            seq = p + r[:-1]
            lo = prompt_width - len(p)
            ids[i, lo:lo + len(seq)] = torch.tensor(seq)
            mask[i, lo:lo + len(seq)] = 1
            # The last `keep` columns' logits predict y_1..y_keep of every row.
            targets[i, :len(r)] = torch.tensor(r)
            answer[i, :len(r)] = True
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Columns before the earliest offset taken (the anchor's or a feature's) cannot
        # depend on it (attention is causal): they run once without a graph, or come from
        # generation's cache. The one pass with a graph starts there, so one backward
        # gives the gradient at every offset. (Starting before the anchor changes how many
        # rows every kernel sees, and with it the float32 rounding of the anchor's scores:
        # up to about 1e-5 relative against a pass started at the anchor.)
        offsets = tuple(k for k in self.feature_offsets if prompt_width + k >= 0)
        split = prompt_width + offsets[-1]
        anchor_column = anchor.offset - offsets[-1]

        captured: dict[int, torch.Tensor] = {}
        head: dict[str, torch.Tensor] = {}
        lowest = anchor.layers[0]

        def capture_head(_module: nn.Module, inputs: Any, output: Any) -> None:
            head["input"], head["output"] = inputs[0], output

        t0 = time.perf_counter()
        with lm.lock, frozen_for_scoring(lm.model):
            past = self._reused_prefix(caches, prompt_width, offsets[-1])
            start = None if past is None else self._kept_state(caches, rows, offsets[-1],
                                                               width - split)
            given = self._kept_outputs(caches, rows, offsets[-1], width - split, keep) \
                if start is not None else None
            if past is None:
                past = self._prefix(ids[:, :split].to(device), mask[:, :split].to(device),
                                    positions[:, :split].to(device))
            hooks = [(layout.module_producing(layer), capture_hook(layer, lowest, captured))
                     for layer in anchor.layers]
            forwards = []
            if given is not None:
                # Right-padding (after a row's last fed token) feeds nothing the objective
                # reads: the backward's products skip it.
                live = torch.arange(width - split) < torch.tensor(
                    [prompt_width - split + n - 1 for n in lengths]).unsqueeze(1)
                forwards = given_outputs(layout.linear_layers(lowest), given, live.to(device))
            with lm.forward_hooks([*hooks, (layout.lm_head, capture_head)], forwards):
                if start is None:
                    logits, hidden = self._forward(ids[:, split:].to(device), mask.to(device),
                                                   positions[:, split:].to(device), keep, past)
                else:  # from generation's hidden state at the lowest anchor layer
                    captured[lowest] = start
                    logits, hidden = upper_forward(lm.model, lowest, start, mask.to(device),
                                                   positions[:, split:].to(device), past,
                                                   keep), None
                answer_d = answer.to(device)
                stats = answer_statistics(logits[:, -keep:], targets.to(device), answer_d)
                synchronize(device)
                t1 = time.perf_counter()
                if lowest not in captured or not captured[lowest].requires_grad:
                    raise GradientAccessError(
                        f"model without gradient access: hidden state {lowest} of "
                        f"{lm.name} was not produced by a differentiable forward pass")
                wanted = [captured[layer] for layer in anchor.layers]
                (at_head,), grads = backward_through_head(
                    stats.objective.sum(), layout.lm_head, [head["output"]], [head["input"]],
                    wanted, answer_d if head["output"].shape[1] == keep else None)
        synchronize(device)
        t2 = time.perf_counter()

        with torch.no_grad():
            head_grad = ((at_head[:, -keep:], head["input"][:, -keep:])
                         if self.hybrid else None)
            measured = self._measure(stats, grads, anchor_column,
                                     [prompt_width + k - split for k in offsets], offsets,
                                     head_grad, answer_d, [len(p) for p, _ in rows])
            probes = self._probe_states(hidden, rows, prompt_width, split, anchor_column)
        synchronize(device)
        t3 = time.perf_counter()

        timings = {"forward": (t1 - t0) / batch, "backward": (t2 - t1) / batch,
                   "aggregate": (t3 - t2) / batch, "total": (t3 - t0) / batch,
                   "batch_size": float(batch)}
        return self._results(rows, measured, timings, retokenized, probes)

    def _measure(self, stats: AnswerStatistics, at_layers: Sequence[torch.Tensor],
                 anchor_column: int, columns: Sequence[int], offsets: Sequence[int],
                 head_grad: tuple[torch.Tensor, torch.Tensor] | None, answer: torch.Tensor,
                 prompt_lengths: Sequence[int]) -> _Measured:
        """Every score and feature of a batch from its backward pass: the anchor layers'
        gradients ``at_layers`` (``[batch, column, dim]``, the anchor at ``anchor_column``
        and ``offsets`` at ``columns``) and, for HybridGrad, the gradient of the head's
        output with the head's input over the answer's positions."""
        norms = anchor_gradients(at_layers, self.anchor.layers, anchor_column, columns,
                                 offsets)
        named = features(stats, norms, prompt_lengths)
        if head_grad is None:
            return _Measured(named)
        pg = self._lm_head_gradient(head_grad[0].float(), head_grad[1].float(), answer)
        alpha = torch.exp(-stats.mean_entropy)
        return _Measured(named, pg.tolist(), alpha.tolist(),
                         hybridgrad(norms.semgrad, pg, alpha).tolist())

    def _results(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                 measured: _Measured, timings: dict[str, float], retokenized: bool,
                 probes: Sequence[HiddenStates] = ()) -> list[UncertaintyScore]:
        """One :class:`UncertaintyScore` per row, checked finite."""
        lm, anchor = self.model, self.anchor
        results = []
        for i, (p, r) in enumerate(rows):
            feats = measured.features[i]
            scores = {name: feats[name] for name in
                      ("semgrad", "nll", "nll_per_token", "mean_entropy", "max_prob")}
            components = {"semgrad": scores["semgrad"], "mean_entropy": scores["mean_entropy"]}
            if measured.hybrid is not None:
                scores["hybridgrad"] = float(measured.hybrid[i])
                components.update(pg=float(measured.pg[i]), alpha=float(measured.alpha[i]))
            estimate = self.learned.estimate(feats) if self.learned is not None else None
            if estimate is not None:
                scores["learned"] = estimate.probability
                components["learned_fallback"] = estimate.fallback_probability
                if not estimate.missing:
                    components.update(learned_model=estimate.model_probability,
                                      learned_distance=estimate.distance)
            _check_finite(i, {**scores, **components, **feats})
            a = len(p) + anchor.offset
            results.append(UncertaintyScore(
                method=self.method, value=scores[self.method], scores=scores,
                components=components, anchor_offset=anchor.offset,
                anchor_token=lm.tokenizer.decode([p[a]]), layers=anchor.layers,
                anchor_source=anchor.source,  # type: ignore[arg-type]
                profile_id=anchor.profile_id, model=lm.name, prompt_ids=tuple(p),
                response_ids=tuple(r), retokenized=retokenized, timings=dict(timings),
                features=feats, hidden_states=probes[i] if probes else None,
                out_of_domain=estimate is not None and estimate.out_of_domain))
        return results

    @staticmethod
    def _probe_states(hidden: tuple[torch.Tensor, ...] | None,
                      rows: list[tuple[list[int], list[int]]], prompt_width: int, split: int,
                      anchor_column: int) -> list[HiddenStates]:
        """Every layer's hidden state at the anchor (column ``anchor_column`` of the pass)
        and at the pass's last position of each row."""
        if hidden is None:
            return []
        stacked = torch.stack(hidden, dim=1)  # [B, layers, columns, d]
        states = []
        for i, (_, r) in enumerate(rows):
            # The last column a row feeds holds y_{T-1}, whose state predicted y_T.
            last = prompt_width + len(r) - 2 - split
            states.append(HiddenStates(anchor=stacked[i, :, anchor_column].float().cpu(),
                                       last=stacked[i, :, last].float().cpu()))
        return states

    @staticmethod
    def _reused_prefix(caches: Sequence[PrefixCache | None], width: int, offset: int) -> Any:
        """Generation's keys and values for the columns before ``offset`` (where the pass
        with a graph starts), when every row of the chunk has them; else None."""
        rows = [c.prompt_columns(width, offset) if c is not None else None for c in caches]
        if not rows or any(r is None for r in rows):
            return None
        from transformers import DynamicCache

        # Per layer, the rows' keys and values stacked into one batch.
        layers = [(torch.cat([k for k, _ in per_row]), torch.cat([v for _, v in per_row]))
                  for per_row in zip(*rows, strict=True)]
        return DynamicCache(ddp_cache_data=layers)

    def _kept_state(self, caches: Sequence[PrefixCache | None],
                    rows: Sequence[tuple[list[int], list[int]]], offset: int, columns: int
                    ) -> torch.Tensor | None:
        """The pass's input at the lowest anchor layer as generation kept it, a leaf
        ``[batch, columns, dim]`` (rows right-padded with zeros), when every row has it
        from ``offset`` on; else None (the pass then runs every block)."""
        if not self._upper:
            return None
        kept = []
        for cache, (prompt, response) in zip(caches, rows, strict=True):
            state = None if cache is None or len(prompt) + offset < 0 else \
                cache.hidden_state(self.anchor.layers[0], offset, response)
            if state is None:
                return None
            kept.append(state[0])
        return _right_padded(kept, columns).requires_grad_(True)

    def _kept_outputs(self, caches: Sequence[PrefixCache | None],
                      rows: Sequence[tuple[list[int], list[int]]], offset: int, columns: int,
                      keep: int) -> dict[str, torch.Tensor] | None:
        """The outputs of the linear layers above the lowest anchor layer over the pass's
        ``columns`` from ``offset``, and the head's over its last ``keep``, as generation
        kept them (``[batch, columns, width]``, rows right-padded with zeros), when every
        row has them; else None (the pass then computes them)."""
        if not self._given_outputs:
            return None
        kept = []
        for cache, (_, response) in zip(caches, rows, strict=True):
            outputs = None if cache is None else cache.layer_outputs(offset, response)
            if outputs is None:
                return None
            kept.append(outputs)
        return {name: _right_padded([outputs[name][0] for outputs in kept],
                                    keep if name == "head" else columns)
                for name in set(kept[0]).intersection(*kept[1:])}

    def _prefix(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> Any:
        """Keys and values of the columns before the pass with a graph, no graph."""
        if ids.shape[1] == 0:
            return None
        with torch.no_grad():
            out = self.model.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                   use_cache=True, logits_to_keep=1)
        return out.past_key_values

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 keep: int, past: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The logits (at least the last ``keep`` columns') and, when asked for, every
        layer's hidden states of the columns run."""
        model = self.model.model
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                  "past_key_values": past, "use_cache": past is not None}
        if self.hidden_states:
            kwargs["output_hidden_states"] = True
        try:
            out = model(**kwargs, logits_to_keep=keep)
        except TypeError:  # older architectures compute every position's logits
            out = model(**kwargs)
        return out.logits, (tuple(out.hidden_states) if self.hidden_states else None)

    @staticmethod
    def _lm_head_gradient(grad_logits: torch.Tensor, hidden: torch.Tensor,
                          answer: torch.Tensor) -> torch.Tensor:
        """``mean |dJ/dW_out|`` per row, from the logit gradient and the head's input.

        ``dJ/dW_out = sum_t g_t h_t^T``; formed a vocabulary chunk at a time so that no
        (vocabulary x hidden) matrix per row is ever held whole.
        """
        g = grad_logits * answer.unsqueeze(-1)
        h = hidden * answer.unsqueeze(-1)
        vocab, dim = g.shape[-1], h.shape[-1]
        totals = torch.zeros(g.shape[0], device=g.device)
        for lo in range(0, vocab, _VOCAB_CHUNK):
            block = torch.bmm(g[:, :, lo:lo + _VOCAB_CHUNK].transpose(1, 2), h)
            totals += block.abs_().sum(dim=(1, 2))  # in place: no second block in memory
        return totals / (vocab * dim)


def _right_padded(rows: Sequence[torch.Tensor], columns: int) -> torch.Tensor:
    """``rows`` (``[columns_i, dim]`` each) as one ``[len(rows), columns, dim]`` tensor,
    each row right-padded with zeros."""
    out = rows[0].new_zeros((len(rows), columns, rows[0].shape[-1]))
    for i, row in enumerate(rows):
        out[i, :row.shape[0]] = row
    return out


def _check_finite(row: int, values: dict[str, float]) -> None:
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} = {value}" for name, value in list(bad.items())[:6])
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        raise NonFiniteScoreError(
            f"the pass over answer {row} of its batch produced non-finite values: "
            f"{shown}{more} (the model's logits or hidden states hold NaN or infinity, or "
            f"it gives the answer probability zero)")
