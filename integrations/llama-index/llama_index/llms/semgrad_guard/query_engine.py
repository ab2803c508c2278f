"""A query engine that applies a chain's policy: pass, abstain, retry with wider or
different retrieval, or escalate to a human."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.llms.llm import LLM
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.response_synthesizers import BaseSynthesizer, get_response_synthesizer
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType
from llama_index.core.settings import Settings

from semgrad_guard import ConfigError
from semgrad_guard.policy import (
    Attempt,
    AttemptResult,
    AuditTrail,
    Guard,
    GuardDecision,
    PolicyConfig,
    RetryWithRetrievalAction,
)
from semgrad_guard.serving import score_served

from .base import SemGradLLM, recorded_calls
from .instrumentation import decision_metadata, dispatch_decision, ensure_instrumented
from .scores import ScoredCompletion, answer_prompt
from .served import LLMCall, recorded_llm_calls, served_answer


class GuardedQueryEngine(BaseQueryEngine):
    """Retrieves, answers and applies the chain's rule from the policy file.

    Every answer is scored: by the :class:`SemGradLLM` that wrote it, on the exact ids
    (the last LLM call of the attempt, recorded as it finishes: :func:`recorded_calls`);
    answers of a served LLM (``OpenAILike`` with ``logprobs=True``) by the guard's
    scorer from the server's tokens, against the prompt the LLM really sent; answers of
    another LLM are re-scored by the guard's scorer, flagged ``retokenized``. The rule for ``chain_name`` (the run name the policy's ``match``
    sees, as for the LangChain integration) then decides through
    :meth:`Guard.run <semgrad_guard.policy.Guard.run>`:

    - **pass**: the answer is returned;
    - **retry with retrieval**: the question runs again with the depth the policy gives
      (the retriever's ``similarity_top_k``), the rewritten query, and the retriever the
      policy names (a key of ``retrievers``), keeping the best attempt;
    - **abstain** / **escalate**: the configured message is returned (or
      :class:`~semgrad_guard.AbstainedError` / :class:`~semgrad_guard.EscalatedError`
      raised, carrying the decision); an escalation submits a review case.

    The response's ``metadata["guard_decision"]`` is the decision
    (``GuardDecision.to_dict()``), ``metadata["semgrad"]`` the chosen attempt's score
    (``None`` when it could not be computed; ``semgrad_error`` says why) and
    ``metadata["uncertain"]`` whether the answer failed its rule (a ``flag`` action
    passes it on anyway), as the LangChain integration returns them; ``source_nodes``
    are the chosen attempt's. Each decision is also a :class:`GuardDecisionEvent` for
    LlamaIndex's instrumentation handlers.

    With ``streaming=True`` (or a streaming ``response_synthesizer``) ``query`` returns a
    ``StreamingResponse`` (``aquery`` an ``AsyncStreamingResponse``): the model's
    stream is buffered while the guard scores and decides, then released, the same
    pieces as the model wrote them when the answer passes, the abstention or pending
    message otherwise. Nothing reaches the reader before the decision.

    >>> from llama_index.core import Document, VectorStoreIndex
    >>> from llama_index.llms.semgrad_guard import OfflineMiniLMEmbedding
    >>> from semgrad_guard.policy import PolicyConfig
    >>> llm = SemGradLLM(max_new_tokens=24)
    >>> index = VectorStoreIndex.from_documents(
    ...     [Document(text="Water boils at 100 degrees Celsius at sea level.")],
    ...     embed_model=OfflineMiniLMEmbedding())
    >>> policy = PolicyConfig.from_dict({"version": 1, "default": {
    ...     "threshold": {"max_score": 1e-3}, "actions": ["abstain"]}})
    >>> engine = GuardedQueryEngine.from_index(index, policy, llm=llm, chain_name="faq")
    >>> response = engine.query("At what temperature does water boil?")
    >>> response.metadata["guard_decision"]["action"]
    'pass'
    """

    def __init__(self, retriever: BaseRetriever,
                 guard: Guard | PolicyConfig | Mapping[str, Any] | str | Path, *,
                 chain_name: str | None = None, llm: LLM | None = None,
                 response_synthesizer: BaseSynthesizer | None = None,
                 retrievers: Mapping[str, BaseRetriever] | None = None,
                 tags: Sequence[str] = (), metadata: Mapping[str, Any] | None = None,
                 audit: AuditTrail | None = None, review_queue: Any = None,
                 streaming: bool = False,
                 callback_manager: CallbackManager | None = None) -> None:
        self._llm = llm or (None if response_synthesizer is not None else Settings.llm)
        scorer = self._llm.scorer if isinstance(self._llm, SemGradLLM) \
            and not isinstance(guard, Guard) else None
        self.guard = Guard.from_policy(guard, scorer=scorer, audit=audit,
                                       review_queue=review_queue)
        self.chain_name = chain_name
        self.tags = tuple(tags)
        self.metadata = dict(metadata or {})
        self._retriever = retriever
        self._retrievers = dict(retrievers or {})
        self._synthesizer = response_synthesizer or get_response_synthesizer(
            llm=self._llm, callback_manager=callback_manager, streaming=streaming)
        self.streaming = streaming or bool(getattr(self._synthesizer, "_streaming", False))
        self._check_retrievers()
        ensure_instrumented()
        super().__init__(callback_manager=callback_manager)

    @classmethod
    def from_index(cls, index: Any, guard: Guard | PolicyConfig | Mapping[str, Any] | str | Path,
                   *, chain_name: str | None = None, llm: LLM | None = None,
                   similarity_top_k: int = 2, **kwargs: Any) -> GuardedQueryEngine:
        """A guarded engine over ``index.as_retriever(similarity_top_k=...)``."""
        return cls(index.as_retriever(similarity_top_k=similarity_top_k), guard,
                   chain_name=chain_name, llm=llm, **kwargs)

    @property
    def rule(self) -> Any:
        """The policy rule this engine's runs fall under."""
        return self.guard.rule_for(self.chain_name, self.tags, self.metadata)

    @property
    def retriever(self) -> BaseRetriever:
        return self._retriever

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"response_synthesizer": self._synthesizer}

    def _check_retrievers(self) -> None:
        check_retriever_names(self.rule, self._retrievers)

    # -- one attempt -------------------------------------------------------------------------------
    def _plan(self, bundle: QueryBundle, attempt: Attempt) -> tuple[BaseRetriever, QueryBundle]:
        retriever = self._retriever if attempt.retriever is None \
            else self._retrievers[attempt.retriever]
        if attempt.k is not None:
            if not hasattr(retriever, "similarity_top_k"):
                raise ConfigError(
                    f"the policy retries with k={attempt.k}, but retriever "
                    f"{type(retriever).__name__} has no similarity_top_k")
            # A copy, so that concurrent queries never see each other's depth.
            retriever = copy.copy(retriever)
            retriever.similarity_top_k = attempt.k  # type: ignore[attr-defined]
        query = bundle if attempt.query == bundle.query_str else QueryBundle(attempt.query)
        return retriever, query

    def _result(self, query: QueryBundle, nodes: list[NodeWithScore], response: Any,
                calls: list[ScoredCompletion], chats: list[LLMCall]) -> AttemptResult:
        """The attempt the guard decides on: the answer, with the exact generation and
        score of the last LLM call that wrote it when a :class:`SemGradLLM` did; else,
        for another chat LLM, the prompt its last call really sent, scored from the
        server's tokens where it sent them (else the guard scores the text)."""
        text = str(getattr(response, "response", None) or "")
        contexts = [n.node.get_content() for n in nodes]
        fields: dict[str, Any] = {"context": contexts, "raw": response,
                                  "prompt": answer_prompt(query.query_str, contexts)}
        if calls:
            return calls[-1].attempt(text, **fields)
        if not chats:
            return AttemptResult(answer=text, **fields)
        last = chats[-1]
        fields["prompt"] = last.messages
        served = served_answer(last.response)
        scorer = self.guard.scorer_for(self.rule)
        if served is None or scorer is None:
            return AttemptResult(answer=text, **fields)
        try:
            score = score_served(scorer, last.messages, served)
        except Exception as exc:  # noqa: BLE001 - the guard applies on_score_failure
            return AttemptResult(answer=text, score_error=exc, **fields)
        return AttemptResult(answer=text, score=score, **fields)

    def _attempt(self, bundle: QueryBundle, attempt: Attempt) -> AttemptResult:
        retriever, query = self._plan(bundle, attempt)
        nodes = retriever.retrieve(query)
        with recorded_calls() as calls, recorded_llm_calls() as chats:
            response: Any = self._synthesizer.synthesize(query, nodes)
            if isinstance(response, StreamingResponse):  # buffered until the decision
                response = _Buffered(list(response.response_gen), nodes)
        return self._result(query, nodes, response, calls, chats)

    async def _aattempt(self, bundle: QueryBundle, attempt: Attempt) -> AttemptResult:
        retriever, query = self._plan(bundle, attempt)
        nodes = await retriever.aretrieve(query)
        with recorded_calls() as calls, recorded_llm_calls() as chats:
            response: Any = await self._synthesizer.asynthesize(query, nodes)
            if isinstance(response, AsyncStreamingResponse):
                response = _Buffered([piece async for piece in response.async_response_gen()],
                                     nodes)
            elif isinstance(response, StreamingResponse):
                response = _Buffered(list(response.response_gen), nodes)
        return self._result(query, nodes, response, calls, chats)

    # -- the query --------------------------------------------------------------------------------
    def query(self, str_or_query_bundle: QueryType) -> Response | StreamingResponse:
        """Answer under the policy: a whole :class:`Response`, or with ``streaming`` a
        ``StreamingResponse`` released after the decision."""
        return cast(Response | StreamingResponse, super().query(str_or_query_bundle))

    async def aquery(self, str_or_query_bundle: QueryType
                     ) -> Response | AsyncStreamingResponse:
        """The async twin of :meth:`query` (``AsyncStreamingResponse`` with ``streaming``)."""
        return cast(Response | AsyncStreamingResponse,
                    await super().aquery(str_or_query_bundle))

    def _chain_k(self) -> int | None:
        k = getattr(self._retriever, "similarity_top_k", None)
        return k if isinstance(k, int) else None

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        decision = self.guard.run(query_bundle.query_str,
                                  lambda attempt: self._attempt(query_bundle, attempt),
                                  self.chain_name, self.tags, self.metadata, k=self._chain_k())
        dispatch_decision(decision, "GuardedQueryEngine")
        response = self._response(decision)
        if not self.streaming:
            return response
        return StreamingResponse(response_gen=(piece for piece in _pieces(decision)),
                                 source_nodes=response.source_nodes, metadata=response.metadata)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        async def attempt_fn(attempt: Attempt) -> AttemptResult:
            return await self._aattempt(query_bundle, attempt)

        decision = await self.guard.arun(query_bundle.query_str, attempt_fn, self.chain_name,
                                         self.tags, self.metadata, k=self._chain_k())
        dispatch_decision(decision, "GuardedQueryEngine")
        response = self._response(decision)
        if not self.streaming:
            return response

        async def released() -> AsyncGenerator[str, None]:
            for piece in _pieces(decision):
                yield piece

        return AsyncStreamingResponse(response_gen=released(), source_nodes=response.source_nodes,
                                      metadata=response.metadata)

    @staticmethod
    def _response(decision: GuardDecision) -> Response:
        chosen = decision.raw
        nodes = list(chosen.source_nodes) if isinstance(chosen, Response | _Buffered) else []
        return Response(response=decision.answer, source_nodes=nodes,
                        metadata=decision_metadata(decision))


@dataclass(frozen=True)
class _Buffered:
    """A streamed answer held back until the guard decides: its pieces, as the model
    wrote them, and the nodes it was written from."""

    pieces: list[str]
    source_nodes: list[NodeWithScore]

    @property
    def response(self) -> str:
        return "".join(self.pieces)


def _pieces(decision: GuardDecision) -> list[str]:
    """What a streaming reader receives once the guard has decided: the model's own
    pieces of a passed answer, else the one message that replaces it."""
    chosen = decision.raw
    if isinstance(chosen, _Buffered) and decision.answer == chosen.response:
        return list(chosen.pieces)
    return [decision.answer or ""]


def check_retriever_names(rule: Any, retrievers: Mapping[str, BaseRetriever]) -> None:
    """Refuse a rule that retries with a retriever the engine was not given."""
    for action in rule.actions:
        if not isinstance(action, RetryWithRetrievalAction):
            continue
        unknown = [name for name in action.retrievers if name not in retrievers]
        if unknown:
            known = ", ".join(sorted(retrievers)) or "none given"
            raise ConfigError(f"rule {rule.name!r} retries with retriever {unknown[0]!r}, "
                              f"which this engine does not have (retrievers=: {known})")
