"""Generation on a model server, scoring in this process.

The answers come from an OpenAI-compatible server (here llama.cpp serving the default
model's GGUF file); this process holds the same model's Hugging Face weights only to
score them. At start-up the server and the scorer are checked to hold the same model
(tokenizer and chat template); every answer is then scored from the server's own tokens
(``logprobs=True``) and the policy decides.

    python -m llama_cpp.server --model "$(python -c 'from semgrad_guard.model.default_model \
        import default_gguf_path; print(default_gguf_path())')" --model_alias smollm2 --port 8080 &
    python examples/served_model.py http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import sys
from typing import Any

from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI
from langchain_semgrad_guard import check_chat_model, guard_chain

from semgrad_guard import LocalModel, SemGradScorer, qa_prompt

#: One rule: pass answers whose per-token NLL is under the threshold, else abstain. On
#: these two questions the default model answers "Leonardo da Vinci" (0.50) and "golden"
#: (1.81); over many questions its scores separate right from wrong weakly
#: (benchmarks/README.md), so fit a threshold on your own labelled answers.
POLICY = {"version": 1, "default": {
    "score": "nll_per_token", "threshold": {"max_score": 1.0},
    "actions": [{"type": "abstain", "message": "I am not sure enough to answer that."}]}}

QUESTIONS = ["Who painted the Mona Lisa?", "What is the chemical symbol of gold?"]


def served_chat_model(base_url: str) -> ChatOpenAI:
    # logprobs=True makes the server send its tokens, so the score uses the exact ids.
    # llama-cpp-python reads max_tokens (newer clients send max_completion_tokens).
    return ChatOpenAI(base_url=base_url, api_key="unused", model="smollm2", temperature=0,
                      logprobs=True, top_logprobs=1, extra_body={"max_tokens": 64})


def main(base_url: str, model: LocalModel | None = None) -> list[Any]:
    scorer = SemGradScorer(model or LocalModel.load())
    llm = served_chat_model(base_url)
    check = check_chat_model(llm, scorer)  # ServedModelMismatchError if they differ
    print(f"served model checked: {check.checks}")
    ask = RunnableLambda(lambda q: qa_prompt(q).chat_messages())
    guarded = guard_chain(ask | llm, POLICY, scorer=scorer, output="decision")
    decisions = []
    for question in QUESTIONS:
        decision = guarded.invoke(question)
        flags = ", ".join(decision.flags) or "exact ids"
        print(f"{decision.action.upper():8} {decision.value:.3f} ({flags})  {question} -> "
              f"{decision.answer}")
        decisions.append(decision)
    return decisions


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1")
