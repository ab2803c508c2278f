"""Answers of a chat model served elsewhere (``ChatOpenAI`` on llama.cpp, vLLM, Ollama),
scored here with the matching Hugging Face weights.

Build the model with ``logprobs=True`` so that each answer's ``response_metadata``
carries the server's tokens: the score then uses the exact response ids. Without
them the answer is re-tokenised and flagged ``retokenized``. Check once, at start-up,
that the server and the scorer hold the same model with :func:`check_chat_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from semgrad_guard.serving import ServedAnswer, ServedModelCheck, check_served_model


def served_answer(metadata: Mapping[str, Any], text: str) -> ServedAnswer | None:
    """The server's tokens for an answer, from an OpenAI-style ``response_metadata``
    (``logprobs`` and ``finish_reason``; ``token_ids`` where an adapter adds them).

    >>> served_answer({"finish_reason": "stop"}, "Paris") is None
    True
    """
    logprobs = metadata.get("logprobs")
    token_ids = metadata.get("token_ids")
    if not logprobs and not token_ids:
        return None
    return ServedAnswer.from_openai(text, logprobs, metadata.get("finish_reason"), token_ids)


def check_chat_model(llm: Any, scorer: Any) -> ServedModelCheck:
    """Check that the server behind a ``ChatOpenAI`` serves the scorer's model (same
    tokenizer, same chat template); raises
    :class:`~semgrad_guard.errors.ServedModelMismatchError` if not.

    ``scorer`` is a ``SemGradScorer``, a ``LocalModel`` or a ``RemoteScorer``.

    >>> from langchain_openai import ChatOpenAI                      # doctest: +SKIP
    >>> llm = ChatOpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none",
    ...                  model="smollm2", logprobs=True)             # doctest: +SKIP
    >>> check_chat_model(llm, scorer).checks["tokenizer"]            # doctest: +SKIP
    'agrees'
    """
    base_url = getattr(llm, "openai_api_base", None) or "https://api.openai.com/v1"
    key: Any = getattr(llm, "openai_api_key", None)
    api_key = key.get_secret_value() if key is not None and hasattr(key, "get_secret_value") \
        else key
    return check_served_model(str(base_url), scorer, api_key=api_key or None,
                              model=getattr(llm, "model_name", None))
