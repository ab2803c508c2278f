"""A guarded RAG chain: answers the documents support pass; the others are retried with
wider retrieval and then abstained from.

    python examples/langchain_rag.py          # OMP_NUM_THREADS=1 on a busy, shared CPU

Runs offline on the default model (SmolLM2-135M-Instruct) and the packaged MiniLM
embeddings. The chain is an ordinary LCEL RAG chain (InMemoryVectorStore retriever,
prompt, chat model, string parser); ``guard_chain`` wraps it with the policy below and
records every decision in an audit trail.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    import langchain_semgrad_guard  # noqa: F401
except ImportError:  # a checkout without `pip install -e integrations/langchain`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations" / "langchain"))

from langchain_core.documents import Document  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import Runnable, RunnablePassthrough  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_semgrad_guard import ChatSemGrad, GuardedChain, guard_chain, widen_retrieval  # noqa: E402

from semgrad_guard import LocalModel, SemGradScorer  # noqa: E402
from semgrad_guard.policy import AuditTrail, GuardDecision  # noqa: E402

#: The knowledge base: a dozen short facts about a (fictional) town library.
DOCUMENTS = [
    "The Harbor Lane Library opens at 9 am on Saturdays and closes at 5 pm.",
    "On weekdays the Harbor Lane Library is open from 8 am to 8 pm.",
    "The Harbor Lane Library is closed on Sundays and on public holidays.",
    "A library card at Harbor Lane is free for residents of the town.",
    "Visitors from outside the town pay 15 euros a year for a library card.",
    "Members can borrow up to 12 books at a time.",
    "Books are lent for three weeks and can be renewed twice online.",
    "The late fee is 20 cents per book per day.",
    "The library's reading room on the second floor seats 40 people.",
    "Children's story hour takes place every Wednesday at 4 pm.",
    "The library offers free wifi; the network is called HarborLane-Guest.",
    "Printing costs 10 cents per black-and-white page.",
]

#: The policy. The rule reads the learned probability of error (``score: auto``) that the
#: default model's shipped profile computes from the one scoring pass; it was chosen from
#: measured probabilities on this chain (below).
POLICY: dict[str, Any] = {
    "version": 1,
    "default": {"score": "auto", "threshold": {"max_error_probability": 0.6},
                "actions": ["abstain"]},
    "chains": [{
        "name": "library-rag",
        "score": "auto",
        "threshold": {"max_error_probability": 0.5},
        "actions": [
            {"type": "retry_with_retrieval", "k_schedule": [6, 12]},
            {"type": "abstain",
             "message": "I can't answer that from the library's documents."},
        ],
    }],
}

#: How the threshold was chosen. The learned probability of error of this chain's answers
#: (greedy decoding, 16 new tokens, the shipped profile, SmolLM2-135M-Instruct; retrieval
#: depth k = 2 / 6 / 12):
#:
#:   answered by the documents     late fee          0.42 / 0.54 / 0.56  (correct)
#:   not in the documents          mural painter     0.59 / 0.71 / 0.72  (invented)
#:
#: 0.5 passes the supported answer on the first attempt and abstains from the invented
#: one after both retries, with a margin of about 0.08 on each side. The small default
#: model is wrong on two calibration answers in three, so its probabilities stay high
#: (README: what each threshold passes); fit your own model's profile on labelled data
#: (``semgrad-guard calibrate --labelled``) before relying on one.

QUESTIONS = [
    "How much is the late fee?",
    "Who painted the mural in the library's entrance hall?",
]

SYSTEM = ("Answer the question in one short sentence, using only the context below.\n\n"
          "Context:\n{context}")


def build_chain(model: LocalModel, k: int = 2, max_new_tokens: int = 16
                ) -> tuple[Runnable[Any, str], ChatSemGrad]:
    """The unguarded RAG chain: retrieve k passages, answer from them."""
    from langchain_huggingface import HuggingFaceEmbeddings

    from semgrad_guard.embeddings import default_embedding_path

    embeddings = HuggingFaceEmbeddings(
        model_name=str(default_embedding_path()),
        model_kwargs={"device": "cpu", "local_files_only": True})
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(text) for text in DOCUMENTS])
    retriever = widen_retrieval(store.as_retriever(search_kwargs={"k": k}))
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    # The chat model scores with the model's profile, which carries the learned score.
    chat = ChatSemGrad(model=model, scorer=SemGradScorer(model),
                       max_new_tokens=max_new_tokens)

    def passages(docs: list[Document]) -> str:
        return "\n".join(f"- {d.page_content}" for d in docs)

    chain = ({"context": retriever | passages, "question": RunnablePassthrough()}
             | prompt | chat | StrOutputParser())
    return chain, chat


def build_guarded(model: LocalModel, audit: AuditTrail | None = None) -> GuardedChain:
    """The RAG chain under the policy (decisions land in ``audit``)."""
    chain, _ = build_chain(model)
    return guard_chain(chain, POLICY, name="library-rag", audit=audit, output="decision")


def table(decisions: list[GuardDecision], base_k: int = 2) -> str:
    """The decisions as a readable table: one row per attempt."""
    rows = [("question", "attempt", "k", "p_error", "passed", "answer", "decision")]
    for d in decisions:
        for i, record in enumerate(d.attempts):
            value = "-" if record.value is None else f"{record.value:.2f}"
            last = i == len(d.attempts) - 1
            rows.append((d.question if i == 0 else "", str(record.attempt.number),
                         str(record.attempt.k or base_k), value, "yes" if record.passed else "no",
                         _short(record.answer), d.action.upper() if last else ""))
    widths = [min(max(len(r[c]) for r in rows), 60) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(_short(cell, widths[c]).ljust(widths[c])
                               for c, cell in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def main(model: LocalModel | None = None) -> list[GuardDecision]:
    """Run the demo and print its decisions (``model``: default, the offline model)."""
    start = time.perf_counter()
    model = model or LocalModel.load()
    audit = AuditTrail()
    guarded = build_guarded(model, audit)
    decisions = [guarded.invoke(q) for q in QUESTIONS]
    print(table(decisions, guarded.k or 2))
    print()
    for d in decisions:
        print(f"{d.action:>8}: {d.answer}")
        print(f"          {d.reason}")
    print(f"\n{len(audit)} decisions in the audit trail; "
          f"threshold: probability of error <= "
          f"{POLICY['chains'][0]['threshold']['max_error_probability']:g}; "
          f"{time.perf_counter() - start:.1f} s")
    return decisions


if __name__ == "__main__":
    main()
