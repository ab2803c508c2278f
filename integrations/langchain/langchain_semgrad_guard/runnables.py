"""Wrap a chain so that its policy decides what it returns.

:func:`guard_chain` wraps any LangChain runnable (an LCEL RAG chain, say) in a
:class:`GuardedChain`. Each call runs the chain, scores its answer and hands the
decision to :meth:`semgrad_guard.policy.Guard.run`: the chain returns the answer, the
abstention, the best answer of retries with wider retrieval, or a pending escalation;
every decision lands in the guard's audit trail.

Retries reach the retriever the LangChain way, through ``config["configurable"]``:
make the retriever's ``search_kwargs`` configurable (:func:`widen_retrieval`) and a
retry with ``k=8`` runs the chain with ``{"search_kwargs": {..., "k": 8}}``; name
alternative retrievers with ``configurable_alternatives`` under the id ``retriever``.
A chain that cannot be configured can be given as a factory, ``attempt -> chain``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackManager,
    CallbackManagerForChainRun,
)
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import (
    ConfigurableField,
    Runnable,
    RunnableConfig,
    RunnableSerializable,
)
from langchain_core.runnables.config import ensure_config, patch_config
from langchain_core.runnables.utils import ConfigurableFieldSpec
from semgrad_guard.errors import ConfigError
from semgrad_guard.policy import (
    Attempt,
    AttemptResult,
    AuditTrail,
    Guard,
    GuardDecision,
    GuardedAnswer,
    PolicyConfig,
    Rule,
)
from semgrad_guard.serving import score_served

from .callbacks import CapturedGeneration, GenerationTracker, retokenized_score
from .messages import message_text
from .served import served_answer
from .tracing import atrace_decision_run, trace_decision_run
from .wiring import check_retrievers, check_scores

#: The ``config["configurable"]`` key that carries the attempt (number, k, query,
#: retriever) to any runnable in the chain that wants to read it.
ATTEMPT_KEY = "semgrad_attempt"

_QUESTION_KEYS = ("question", "input", "query")
_ANSWER_KEYS = ("answer", "output", "result", "text")

ChainFactory = Callable[[Attempt], Runnable[Any, Any]]


def widen_retrieval(retriever: RunnableSerializable[Any, Any], *,
                    field_id: str = "search_kwargs") -> RunnableSerializable[Any, Any]:
    """Make a retriever's ``search_kwargs`` configurable, so that a guarded chain can
    retry it with a larger ``k``.

    The same as ``retriever.configurable_fields(search_kwargs=ConfigurableField(...))``.

    >>> from langchain_core.vectorstores import InMemoryVectorStore
    >>> from langchain_core.embeddings import DeterministicFakeEmbedding
    >>> store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    >>> retriever = widen_retrieval(store.as_retriever(search_kwargs={"k": 2}))
    >>> [s.default for s in retriever.config_specs if s.id == "search_kwargs"]
    [{'k': 2}]
    """
    return retriever.configurable_fields(search_kwargs=ConfigurableField(
        id=field_id, name="Search kwargs",
        description="Retriever search arguments; a guarded chain widens k on retries."))


class _AttemptRecorder(GenerationTracker):
    """Collects, for one attempt, the generations and retrieved documents of the run."""

    # Cheap bookkeeping: no need for an executor hop in async runs.
    run_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.generations: list[CapturedGeneration] = []
        self.documents: list[Document] = []

    def on_llm_end(self, response: LLMResult, *, run_id: Any, parent_run_id: Any = None,
                   **kwargs: Any) -> None:
        captured = self._captured(response, run_id)
        with self._lock:
            self.generations.extend(captured)

    def on_retriever_end(self, documents: Sequence[Document], *, run_id: Any,
                         parent_run_id: Any = None, **kwargs: Any) -> None:
        with self._lock:
            self.documents.extend(documents)


class GuardedChain(Runnable[Any, Any]):
    """A chain whose answers pass through a :class:`~semgrad_guard.policy.Guard`.

    ``invoke`` / ``ainvoke`` / ``batch`` / ``abatch`` / ``stream`` behave like the
    wrapped chain's, with the guard's decision in place of the raw answer. A guarded
    chain cannot release an answer before it is scored, so ``stream`` yields the decided
    output as one chunk.

    The chain's score comes from its chat model's answer: a
    :class:`~langchain_semgrad_guard.ChatSemGrad` answer carries it (exact ids); other
    models' answers are scored by the guard's scorer, re-tokenised. A carried score is
    read under the rule's ``score`` method; its anchor is the one the chat model's scorer
    uses (the rule's ``profile`` applies to the guard's own scorer). When the chain calls
    several models, the last answer to finish is the one judged.

    ``output`` shapes what the call returns: ``"answer"`` (the default) keeps the
    chain's output type: a string becomes the decided answer, a
    :class:`~semgrad_guard.policy.GuardedAnswer` (a ``str`` whose ``decision`` and
    ``case_id`` say what was decided); a message gets it as content; a dict gets it
    under its answer key; messages and dicts also carry ``guard_decision``
    (``GuardDecision.to_dict()``). ``"decision"`` returns the
    :class:`~semgrad_guard.policy.GuardDecision` itself.

    >>> from langchain_core.runnables import RunnableLambda
    >>> from semgrad_guard.policy import PolicyConfig, Guard
    >>> from semgrad_guard.testing import ScriptedScorer
    >>> policy = PolicyConfig.from_dict({"version": 1, "default": {
    ...     "threshold": {"max_score": 0.5}, "actions": ["abstain"]}})
    >>> chain = RunnableLambda(lambda q: "Paris")
    >>> guarded = GuardedChain(chain, Guard(policy, scorer=ScriptedScorer([0.2, 0.9])))
    >>> guarded.invoke("Capital of France?"), guarded.invoke("Capital of Australia?")
    ('Paris', 'I am not confident enough in an answer to this question.')
    """

    def __init__(self, chain: Runnable[Any, Any] | ChainFactory, guard: Guard, *,
                 name: str | None = None, tags: Sequence[str] = (),
                 metadata: Mapping[str, Any] | None = None, question_key: str | None = None,
                 answer_key: str | None = None, k: int | None = None,
                 search_kwargs_field: str = "search_kwargs", k_field: str = "k",
                 retriever_field: str = "retriever",
                 output: Literal["answer", "decision"] = "answer") -> None:
        if not isinstance(guard, Guard):
            raise ConfigError(f"GuardedChain needs a semgrad_guard.policy.Guard, got "
                              f"{type(guard).__name__}")
        if output not in ("answer", "decision"):
            raise ConfigError(f"output {output!r}: expected 'answer' or 'decision'")
        if not isinstance(chain, Runnable) and not callable(chain):
            raise ConfigError(f"chain must be a Runnable or a function attempt -> Runnable, "
                              f"got {type(chain).__name__}")
        self.chain = chain
        self.guard = guard
        self.name = name
        self.tags = list(tags)
        self.metadata = dict(metadata or {})
        self.question_key = question_key
        self.answer_key = answer_key
        self.search_kwargs_field = search_kwargs_field
        self.k_field = k_field
        self.retriever_field = retriever_field
        self.output = output
        self.base_search_kwargs = self._base_search_kwargs()
        base_k = self.base_search_kwargs.get("k")
        self.k = k if k is not None else (base_k if isinstance(base_k, int) else None)
        check_scores(chain if isinstance(chain, Runnable) else None, guard)
        self._check_retrievers(guard.rule_for(name, self.tags, self.metadata))

    def _check_retrievers(self, rule: Rule) -> None:
        if isinstance(self.chain, Runnable):  # a factory picks attempt.retriever itself
            check_retrievers(self.chain, rule, self.retriever_field)

    # -- what LangChain asks of a runnable ------------------------------------------------------
    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return self.chain.InputType if isinstance(self.chain, Runnable) else Any

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        if isinstance(self.chain, Runnable):
            return self.chain.get_input_schema(config)
        return super().get_input_schema(config)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return list(self.chain.config_specs) if isinstance(self.chain, Runnable) else []

    def _base_search_kwargs(self) -> dict[str, Any]:
        for spec in self.config_specs:
            if spec.id == self.search_kwargs_field and isinstance(spec.default, Mapping):
                return dict(spec.default)
        return {}

    # -- one attempt ----------------------------------------------------------------------------
    def question_of(self, value: Any) -> str:
        """The question in the chain's input."""
        if isinstance(value, str):
            return value
        if isinstance(value, BaseMessage):
            return message_text(value)
        if isinstance(value, Mapping):
            keys = [self.question_key] if self.question_key else list(_QUESTION_KEYS)
            for key in keys:
                if key in value and isinstance(value[key], str):
                    return str(value[key])
            texts = [v for v in value.values() if isinstance(v, str)]
            if not self.question_key and len(texts) == 1:
                return texts[0]
            raise ConfigError(f"cannot find the question in the input keys {sorted(value)}; "
                              f"pass question_key=")
        raise ConfigError(f"cannot find the question in a {type(value).__name__} input")

    def _attempt_input(self, value: Any, attempt: Attempt) -> Any:
        question = self.question_of(value)
        if attempt.query == question:
            return value
        if isinstance(value, str):
            return attempt.query
        if isinstance(value, Mapping):
            keys = [self.question_key] if self.question_key else list(_QUESTION_KEYS)
            key = next((k for k in keys if k in value), None)
            if key is None:
                key = next(k for k, v in value.items() if isinstance(v, str))
            return {**value, key: attempt.query}
        return value

    def _attempt_config(self, config: RunnableConfig, attempt: Attempt,
                        recorder: _AttemptRecorder) -> RunnableConfig:
        configurable: dict[str, Any] = {ATTEMPT_KEY: attempt.to_dict()}
        if attempt.k is not None:
            configurable[self.search_kwargs_field] = {**self.base_search_kwargs, "k": attempt.k}
            configurable[self.k_field] = attempt.k
        if attempt.retriever is not None:
            configurable[self.retriever_field] = attempt.retriever
        callbacks = config.get("callbacks")
        if callbacks is None:
            handlers: Any = [recorder]
        elif isinstance(callbacks, BaseCallbackManager):
            handlers = callbacks.copy()
            handlers.add_handler(recorder, inherit=True)
        else:
            handlers = [*callbacks, recorder]
        patched = patch_config(config, configurable=configurable)
        patched["callbacks"] = handlers
        return patched

    def _chain_for(self, attempt: Attempt) -> Runnable[Any, Any]:
        if isinstance(self.chain, Runnable):
            return self.chain
        built = self.chain(attempt)
        if not isinstance(built, Runnable):
            raise ConfigError(f"the chain factory returned {type(built).__name__}, not a "
                              f"Runnable")
        return built

    def answer_of(self, output: Any) -> str:
        """The answer text in the chain's output."""
        if isinstance(output, str):
            return output
        if isinstance(output, BaseMessage):
            return message_text(output)
        if isinstance(output, Mapping):
            keys = [self.answer_key] if self.answer_key else list(_ANSWER_KEYS)
            for key in keys:
                if key in output:
                    return self.answer_of(output[key])
            raise ConfigError(f"cannot find the answer in the output keys {sorted(output)}; "
                              f"pass answer_key=")
        raise ConfigError(f"cannot read an answer from a {type(output).__name__} output")

    def _result(self, output: Any, recorder: _AttemptRecorder, rule: Rule) -> AttemptResult:
        answer = self.answer_of(output)
        context = [d.page_content for d in recorder.documents]
        if not recorder.generations:
            return AttemptResult(answer=answer, context=context, raw=output)
        last = recorder.generations[-1]
        prompt = last.prompt if isinstance(last.prompt, list) else None
        result = AttemptResult.from_metadata(answer, last.metadata, text=last.text,
                                             context=context, raw=output, prompt=prompt)
        scorer = self.guard.scorer_for(rule)
        if result.score is not None or result.score_error is not None \
                or result.generation is not None or scorer is None:
            return result
        served = served_answer(last.metadata, last.text)
        if served is not None or isinstance(last.prompt, str):
            # A served model's answer is scored from the server's tokens; a text LLM's
            # prompt is already formatted: tokenise it as it is.
            try:
                score = score_served(scorer, last.prompt, served) if served is not None \
                    else retokenized_score(scorer, last.prompt, last.text)
            except Exception as exc:  # noqa: BLE001 - the guard applies on_score_failure
                return replace(result, score_error=exc)
            return replace(result, score=score)
        return result

    # -- the output -------------------------------------------------------------------------------
    def _shape(self, decision: GuardDecision) -> Any:
        if self.output == "decision":
            return decision
        raw = decision.raw
        answer = decision.answer if decision.answer is not None else ""
        if isinstance(raw, AIMessage):
            return raw.model_copy(update={
                "content": answer,
                "response_metadata": {**raw.response_metadata,
                                      "guard_decision": decision.to_dict()}})
        if isinstance(raw, Mapping):
            keys = [self.answer_key] if self.answer_key else list(_ANSWER_KEYS)
            key = next((k for k in keys if k in raw), keys[0])
            return {**raw, key: answer, "guard_decision": decision.to_dict()}
        return GuardedAnswer.of(decision)

    def _run_args(self, config: RunnableConfig) -> dict[str, Any]:
        return {"run_name": self.name, "tags": [*self.tags, *config.get("tags", [])],
                "metadata": {**self.metadata, **config.get("metadata", {})}, "k": self.k}

    # -- sync -----------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._guard, input, ensure_config(config),
                                      run_type="chain")

    def _guard(self, value: Any, run_manager: CallbackManagerForChainRun,
               config: RunnableConfig) -> Any:
        # `config` is the child config of this run: the chain's runs nest under it.
        args = self._run_args(config)
        question = self.question_of(value)
        rule = self.guard.rule_for(args["run_name"], args["tags"], args["metadata"])
        self._check_retrievers(rule)

        def attempt_fn(attempt: Attempt) -> AttemptResult:
            recorder = _AttemptRecorder()
            output = self._chain_for(attempt).invoke(
                self._attempt_input(value, attempt),
                self._attempt_config(config, attempt, recorder))
            return self._result(output, recorder, rule)

        decision = self.guard.run(question, attempt_fn, **args)
        trace_decision_run(decision, config, args["run_name"], rule.threshold)
        return self._shape(decision)

    # -- async ----------------------------------------------------------------------------------
    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        return await self._acall_with_config(self._aguard, input, ensure_config(config),
                                             run_type="chain")

    async def _aguard(self, value: Any, run_manager: AsyncCallbackManagerForChainRun,
                      config: RunnableConfig) -> Any:
        args = self._run_args(config)
        question = self.question_of(value)
        rule = self.guard.rule_for(args["run_name"], args["tags"], args["metadata"])
        self._check_retrievers(rule)

        async def attempt_fn(attempt: Attempt) -> AttemptResult:
            recorder = _AttemptRecorder()
            output = await self._chain_for(attempt).ainvoke(
                self._attempt_input(value, attempt),
                self._attempt_config(config, attempt, recorder))
            return self._result(output, recorder, rule)

        decision = await self.guard.arun(question, attempt_fn, **args)
        await atrace_decision_run(decision, config, args["run_name"], rule.threshold)
        return self._shape(decision)


def guard_chain(chain: Runnable[Any, Any] | ChainFactory,
                policy: str | Path | PolicyConfig | Mapping[str, Any] | Guard, *,
                scorer: Any = None, model: Any = None, audit: AuditTrail | str | Path | None = None,
                review_queue: Any = None, name: str | None = None,
                **options: Any) -> GuardedChain:
    """Wrap ``chain`` so that ``policy`` decides what it returns.

    ``policy`` is a policy file, a ``PolicyConfig`` (or its dict), or a ready ``Guard``.
    Scores come from the chain's :class:`~langchain_semgrad_guard.ChatSemGrad`
    answers; for other models give ``scorer`` (a ``SemGradScorer``) or ``model`` (a
    ``LocalModel``: one scorer per rule, with the rule's score and profile). ``audit``
    is an ``AuditTrail`` or the path of its SQLite file (default: in memory, at
    ``guarded.guard.audit``). ``name`` is the run name the policy's chain rules match.
    ``options`` go to :class:`GuardedChain`.

    >>> from langchain_core.runnables import RunnableLambda
    >>> from semgrad_guard import LocalModel
    >>> guarded = guard_chain(RunnableLambda(lambda q: "Paris"),
    ...     {"version": 1, "default": {"profile": "default", "threshold": {"max_score": 1e-3}}},
    ...     model=LocalModel.load(), name="capitals")   # SemGrad about 5e-4 here
    >>> guarded.invoke("What is the capital of France?")
    'Paris'
    >>> [r.action for r in guarded.guard.audit.records()]
    ['pass']
    """
    if audit is None and not isinstance(policy, Guard):
        audit = AuditTrail()  # every guarded chain keeps its decisions
    guard = Guard.from_policy(policy, scorer=scorer, model=model, audit=audit,
                              review_queue=review_queue)
    return GuardedChain(chain, guard, name=name, **options)
