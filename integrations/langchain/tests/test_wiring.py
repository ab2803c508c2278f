"""A guarded chain that cannot work as configured fails when it is built, naming why."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from semgrad_guard.errors import ConfigError, ConfigWarning
from semgrad_guard.testing import ScriptedScorer

from langchain_semgrad_guard import ChatSemGrad, guard_chain

PROMPT = ChatPromptTemplate.from_messages([("system", "{context}"), ("human", "{question}")])
POLICY = {"version": 1, "default": {"threshold": {"max_score": 0.5}, "actions": ["abstain"]}}
RETRIES = {"version": 1, "default": {
    "threshold": {"max_score": 0.5},
    "actions": [{"type": "retry_with_retrieval", "retrievers": ["bm25", "dense-large"]},
                "abstain"]}}


def rag(model: Any, **alternatives: Any) -> Any:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts(["The late fee is 20 cents a day."])
    retriever: Any = store.as_retriever()
    if alternatives:
        retriever = retriever.configurable_alternatives(
            ConfigurableField(id="retriever"), default_key="dense", **alternatives)
    return ({"context": retriever, "question": RunnablePassthrough()} | PROMPT | model
            | StrOutputParser())


def test_a_chain_whose_models_cannot_score_needs_a_scorer() -> None:
    fake = FakeListChatModel(responses=["20 cents"])
    with pytest.raises(ConfigError, match=r"models \(FakeListChatModel\) do not score"):
        guard_chain(rag(fake), POLICY)
    guard_chain(rag(fake), POLICY, scorer=ScriptedScorer([]))  # a scorer: fine


def test_a_chain_with_a_scoring_chat_model_needs_no_scorer(chat: ChatSemGrad) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard_chain(rag(chat), POLICY)
    with pytest.raises(ConfigError, match="ChatSemGrad"):
        guard_chain(rag(ChatSemGrad(model=chat.model, score_answers=False)), POLICY)


def test_a_chain_that_shows_no_model_is_warned_about() -> None:
    with pytest.warns(ConfigWarning, match="shows no chat model"):
        guard_chain(RunnableLambda(lambda q: "20 cents"), POLICY)
    with pytest.warns(ConfigWarning, match="a chain factory"):
        guard_chain(lambda attempt: RunnableLambda(lambda q: "20 cents"), POLICY)


def test_retrievers_the_chain_does_not_have_are_refused() -> None:
    fake = FakeListChatModel(responses=["20 cents"])
    scorer = ScriptedScorer([])
    with pytest.raises(ConfigError, match="no alternatives under the configurable id "
                                          "'retriever'"):
        guard_chain(rag(fake), RETRIES, scorer=scorer)
    with pytest.raises(ConfigError, match=r"dense-large, which the chain's 'retriever' "
                                          r"alternatives do not have \(it has: bm25, dense\)"):
        guard_chain(rag(fake, bm25=RunnableLambda(lambda q: [])), RETRIES, scorer=scorer)
    guard_chain(rag(fake, bm25=RunnableLambda(lambda q: []),
                    **{"dense-large": RunnableLambda(lambda q: [])}), RETRIES, scorer=scorer)
    # A factory picks attempt.retriever itself.
    guard_chain(lambda attempt: rag(fake), RETRIES, scorer=scorer)
