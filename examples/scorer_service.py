"""Many application processes, one scoring model: a shared scoring service.

This process loads no model at all: its answers come from an OpenAI-compatible server
and their scores from ``semgrad-guard serve-scorer``, which holds the model's Hugging
Face weights once for every process that asks (token-protected, localhost by default).

    export SEMGRAD_GUARD_SCORER_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe())')
    semgrad-guard serve-scorer --port 8766 &
    python -m llama_cpp.server --model "$(python -c 'from semgrad_guard.model.default_model \
        import default_gguf_path; print(default_gguf_path())')" --model_alias smollm2 --port 8080 &
    python examples/scorer_service.py http://127.0.0.1:8080/v1 http://127.0.0.1:8766
"""

from __future__ import annotations

import sys
from typing import Any

from langchain_core.runnables import RunnableLambda
from langchain_semgrad_guard import check_chat_model, guard_chain
from served_model import POLICY, QUESTIONS, served_chat_model

from semgrad_guard import qa_prompt
from semgrad_guard.serving import RemoteScorer


def main(llm_url: str, scorer_url: str, token: str | None = None) -> list[Any]:
    # The token comes from SEMGRAD_GUARD_SCORER_TOKEN unless given.
    with RemoteScorer(scorer_url, token=token) as scorer:
        print(f"scoring service: {scorer.health()}")
        llm = served_chat_model(llm_url)
        check_chat_model(llm, scorer)  # the service says which tokenizer and template it has
        ask = RunnableLambda(lambda q: qa_prompt(q).chat_messages())
        guarded = guard_chain(ask | llm, POLICY, scorer=scorer, output="decision")
        decisions = [guarded.invoke(question) for question in QUESTIONS]
    for question, decision in zip(QUESTIONS, decisions, strict=True):
        print(f"{decision.action.upper():8} {decision.value:.3f}  {question} -> "
              f"{decision.answer}")
    return decisions


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1",
         sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8766")
