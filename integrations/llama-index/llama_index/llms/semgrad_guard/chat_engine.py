"""A chat engine that applies a chain's policy to every turn: pass, abstain, retry with
wider or different retrieval, or escalate to a human."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine.types import (
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.llms.llm import LLM

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

from .base import SemGradLLM, recorded_calls
from .instrumentation import decision_metadata, dispatch_decision, ensure_instrumented
from .query_engine import check_retriever_names
from .scores import ScoredCompletion, answer_prompt

#: The chat modes of ``index.as_chat_engine`` in LlamaIndex 0.14 (``best`` is
#: ``condense_plus_context``).
CHAT_MODES = ("condense_plus_context", "context", "condense_question", "simple", "best")


class GuardedChatEngine(BaseChatEngine):
    """Wraps a LlamaIndex chat engine and decides on each of its answers under the rule
    the policy gives ``chain_name`` (as :class:`GuardedQueryEngine` does for queries).

    Each ``chat`` turn runs the wrapped engine and hands its answer, with the retrieved
    context and the exact generation and score of the :class:`SemGradLLM` call that
    wrote it (the last call of the turn; a condensing call before it is not judged), to
    :meth:`Guard.run <semgrad_guard.policy.Guard.run>`:

    - **pass**: the answer is returned;
    - **retry with retrieval**: the turn runs again from the same conversation, with
      the engine's retriever widened to the policy's ``k`` (``similarity_top_k``) or
      replaced by one of ``retrievers``, and the rewritten message;
    - **abstain** / **escalate**: the configured message is returned (or raised), and an
      escalation submits a review case.

    The conversation keeps what the user was told: after every turn the engine's memory
    holds the user's message and the decided answer, never an uncertain answer the guard
    withheld, nor the attempts of a retry. The response's ``metadata`` holds
    ``semgrad``, ``guard_decision`` and ``uncertain``, as a guarded query engine's does,
    and each decision is a :class:`GuardDecisionEvent`. The guard decides on whole
    answers, so ``stream_chat`` refuses with a ``ConfigError``.

    Works with every chat mode of ``index.as_chat_engine`` (``condense_plus_context``,
    ``context``, ``condense_question``, ``simple``) or any engine built by hand;
    :meth:`from_index` builds one.

    >>> from llama_index.core import Document, VectorStoreIndex
    >>> from llama_index.llms.semgrad_guard import OfflineMiniLMEmbedding
    >>> llm = SemGradLLM(max_new_tokens=16)
    >>> index = VectorStoreIndex.from_documents(
    ...     [Document(text="The library opens at 9 am.")], embed_model=OfflineMiniLMEmbedding())
    >>> engine = GuardedChatEngine.from_index(index, {"version": 1, "default": {
    ...     "threshold": {"max_score": 1.0}, "actions": ["abstain"]}}, llm=llm)
    >>> engine.chat("When does the library open?").metadata["guard_decision"]["action"]
    'pass'
    """

    def __init__(self, chat_engine: BaseChatEngine,
                 guard: Guard | PolicyConfig | Mapping[str, Any] | str | Path, *,
                 chain_name: str | None = None, llm: LLM | None = None,
                 retrievers: Mapping[str, BaseRetriever] | None = None,
                 tags: Sequence[str] = (), metadata: Mapping[str, Any] | None = None,
                 audit: AuditTrail | None = None, review_queue: Any = None) -> None:
        if not isinstance(chat_engine, BaseChatEngine):
            raise ConfigError(f"GuardedChatEngine wraps a LlamaIndex chat engine, got "
                              f"{type(chat_engine).__name__}")
        if getattr(chat_engine, "_memory", None) is None:
            raise ConfigError(f"{type(chat_engine).__name__} keeps no memory the guard can "
                              "correct; wrap a chat engine with a memory")
        llm = llm or getattr(chat_engine, "_llm", None)
        scorer = llm.scorer if isinstance(llm, SemGradLLM) and not isinstance(guard, Guard) \
            else None
        self.guard = Guard.from_policy(guard, scorer=scorer, audit=audit,
                                       review_queue=review_queue)
        self.chat_engine = chat_engine
        self.chain_name = chain_name
        self.tags = tuple(tags)
        self.metadata = dict(metadata or {})
        self._retrievers = dict(retrievers or {})
        self._check_retries()
        ensure_instrumented()

    @classmethod
    def from_index(cls, index: Any, guard: Guard | PolicyConfig | Mapping[str, Any] | str | Path,
                   *, chat_mode: str = "condense_plus_context", llm: LLM | None = None,
                   chain_name: str | None = None, similarity_top_k: int = 2,
                   retrievers: Mapping[str, BaseRetriever] | None = None,
                   tags: Sequence[str] = (), metadata: Mapping[str, Any] | None = None,
                   audit: AuditTrail | None = None, review_queue: Any = None,
                   **chat_kwargs: Any) -> GuardedChatEngine:
        """A guarded ``index.as_chat_engine(chat_mode=...)`` (``chat_kwargs`` go there)."""
        if chat_mode not in CHAT_MODES:
            raise ConfigError(f"chat_mode {chat_mode!r}: expected one of {', '.join(CHAT_MODES)}")
        engine = index.as_chat_engine(chat_mode=chat_mode, llm=llm,
                                      similarity_top_k=similarity_top_k, **chat_kwargs)
        return cls(engine, guard, chain_name=chain_name, llm=llm, retrievers=retrievers,
                   tags=tags, metadata=metadata, audit=audit, review_queue=review_queue)

    @property
    def rule(self) -> Any:
        """The policy rule this engine's turns fall under."""
        return self.guard.rule_for(self.chain_name, self.tags, self.metadata)

    def _retriever_holder(self) -> Any:
        """What holds the engine's retriever: the engine, or (condense_question) its
        query engine."""
        if getattr(self.chat_engine, "_retriever", None) is not None:
            return self.chat_engine
        return getattr(self.chat_engine, "_query_engine", None)

    def _retriever(self) -> BaseRetriever | None:
        retriever = getattr(self._retriever_holder(), "_retriever", None)
        return retriever if isinstance(retriever, BaseRetriever) else None

    def _check_retries(self) -> None:
        check_retriever_names(self.rule, self._retrievers)
        for action in self.rule.actions:
            if not isinstance(action, RetryWithRetrievalAction):
                continue
            widens = action.k_schedule is not None or action.base_k is not None \
                or self._chain_k() is not None
            if widens and not hasattr(self._retriever(), "similarity_top_k"):
                raise ConfigError(f"rule {self.rule.name!r} retries with wider retrieval, but "
                                  f"{type(self.chat_engine).__name__} has no retriever with "
                                  "similarity_top_k")

    def _chain_k(self) -> int | None:
        k = getattr(self._retriever(), "similarity_top_k", None)
        return k if isinstance(k, int) else None

    # -- one attempt --------------------------------------------------------------------------
    @property
    def _memory(self) -> Any:
        return self.chat_engine._memory  # type: ignore[attr-defined]

    @contextmanager
    def _retrieval(self, attempt: Attempt) -> Iterator[None]:
        """The engine's retriever for this attempt (restored afterwards)."""
        if attempt.k is None and attempt.retriever is None:
            yield
            return
        holder = self._retriever_holder()
        original = holder._retriever
        retriever: Any = self._retrievers[attempt.retriever] if attempt.retriever else original
        if attempt.k is not None:
            retriever = copy.copy(retriever)
            retriever.similarity_top_k = attempt.k
        holder._retriever = retriever
        try:
            yield
        finally:
            holder._retriever = original

    @staticmethod
    def _result(message: str, response: Any, calls: list[ScoredCompletion]) -> AttemptResult:
        if not isinstance(response, AgentChatResponse):
            raise ConfigError(f"the chat engine answered with a {type(response).__name__}; "
                              "GuardedChatEngine decides on whole AgentChatResponse answers")
        contexts = [n.node.get_content() for n in response.source_nodes]
        fields: dict[str, Any] = {"context": contexts, "raw": response,
                                  "prompt": answer_prompt(message, contexts)}
        if not calls:
            return AttemptResult(answer=response.response, **fields)
        return calls[-1].attempt(response.response, **{**fields, "prompt": calls[-1].prompt})

    def _attempt(self, history: list[ChatMessage], attempt: Attempt) -> AttemptResult:
        self._memory.set(list(history))  # every attempt starts from the same conversation
        with self._retrieval(attempt), recorded_calls() as calls:
            response = self.chat_engine.chat(attempt.query)
        return self._result(attempt.query, response, calls)

    async def _aattempt(self, history: list[ChatMessage], attempt: Attempt) -> AttemptResult:
        await self._memory.aset(list(history))
        with self._retrieval(attempt), recorded_calls() as calls:
            response = await self.chat_engine.achat(attempt.query)
        return self._result(attempt.query, response, calls)

    # -- a turn -------------------------------------------------------------------------------
    def _start(self, chat_history: list[ChatMessage] | None) -> list[ChatMessage]:
        if chat_history is not None:
            self._memory.set(list(chat_history))
        return list(self._memory.get_all())

    @staticmethod
    def _told(message: str, history: list[ChatMessage], decision: GuardDecision
              ) -> list[ChatMessage]:
        """The conversation after a turn: the user's message and what they were told."""
        return [*history, ChatMessage(role=MessageRole.USER, content=message),
                ChatMessage(role=MessageRole.ASSISTANT, content=decision.answer or "")]

    @staticmethod
    def _response(decision: GuardDecision) -> AgentChatResponse:
        dispatch_decision(decision, "GuardedChatEngine")
        chosen = decision.raw
        sources = list(chosen.sources) if isinstance(chosen, AgentChatResponse) else []
        nodes = list(chosen.source_nodes) if isinstance(chosen, AgentChatResponse) else []
        return AgentChatResponse(response=decision.answer or "", sources=sources,
                                 source_nodes=nodes, metadata=decision_metadata(decision))

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None
             ) -> AgentChatResponse:
        """One turn under the policy."""
        history = self._start(chat_history)
        try:
            decision = self.guard.run(message, lambda attempt: self._attempt(history, attempt),
                                      self.chain_name, self.tags, self.metadata,
                                      k=self._chain_k())
        except BaseException:
            self._memory.set(history)  # a turn that raised leaves no trace
            raise
        self._memory.set(self._told(message, history, decision))
        return self._response(decision)

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None
                    ) -> AgentChatResponse:
        """The async twin of :meth:`chat`."""
        if chat_history is not None:
            await self._memory.aset(list(chat_history))
        history = list(await self._memory.aget_all())

        async def attempt_fn(attempt: Attempt) -> AttemptResult:
            return await self._aattempt(history, attempt)

        try:
            decision = await self.guard.arun(message, attempt_fn, self.chain_name, self.tags,
                                             self.metadata, k=self._chain_k())
        except BaseException:
            await self._memory.aset(history)
            raise
        await self._memory.aset(self._told(message, history, decision))
        return self._response(decision)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None
                    ) -> StreamingAgentChatResponse:
        raise ConfigError("GuardedChatEngine decides on whole answers and does not stream a "
                          "turn; use chat() (or GuardedQueryEngine(streaming=True), which "
                          "releases a buffered answer after the decision)")

    async def astream_chat(self, message: str, chat_history: list[ChatMessage] | None = None
                           ) -> StreamingAgentChatResponse:
        return self.stream_chat(message, chat_history)

    def reset(self) -> None:
        """Forget the conversation."""
        self.chat_engine.reset()

    @property
    def chat_history(self) -> list[ChatMessage]:
        return list(self.chat_engine.chat_history)
