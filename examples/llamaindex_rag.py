"""Guarded RAG with LlamaIndex, offline on the default model (SmolLM2-135M-Instruct).

A ``VectorStoreIndex`` over twelve short support documents (offline all-MiniLM-L6-v2
embeddings) answers two questions through a :class:`GuardedQueryEngine` named
``rag-support``, under the policy below (a YAML file, the same format and loader the
LangChain integration uses; ``--policy FILE`` reads another one, matched by the chain
name):

- an answerable question ("How much does the Northwind Trail 3 weigh?") is answered
  from its passage with a low probability of error and **passes**;
- an unanswerable one ("What is the name of the Northwind founder's dog?") scores
  higher, is **retried** with twice the passages and a rewritten query, stays
  uncertain, and is **escalated** to a review queue (SQLite, in a temporary folder).

Run it with ``python examples/llamaindex_rag.py`` (``HF_HUB_OFFLINE=1``; nothing is
downloaded). Every LLM call is also recorded by an ``UncertaintyEventHandler``.

How the threshold was chosen. The policy reads the learned probability of error
(``score: auto``) that the default model's shipped profile computes from the one
scoring pass; measured on this very setup (greedy decoding, 24 new tokens, CPU):

=====================================================  ========  =======
question (answer given)                                passages  p_error
=====================================================  ========  =======
Trail 3 weight ("... weighs 11 kilograms.", correct)   2         0.46
founder's dog ("... a cat named Max.", made up)        2         0.70
founder's dog, retried with the rewritten query        4         0.72
=====================================================  ========  =======

``max_error_probability: 0.6``, the threshold the README suggests for this model
(it passes 33% of the calibration answers), lies 0.14 above the answerable question
and 0.10 below the unanswerable one. The small model is wrong on two calibration
answers in three, so its probabilities stay high; on another model, fit its profile
on labelled questions (``semgrad-guard calibrate --labelled``) and pick the threshold
again. integrations/llama-index/tests/test_example.py checks the outcome on every run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.base.response.schema import Response  # noqa: E402
from llama_index.llms.semgrad_guard import (  # noqa: E402
    DECISION_KEY,
    GuardedQueryEngine,
    OfflineMiniLMEmbedding,
    SemGradLLM,
    UncertaintyEventHandler,
)

from semgrad_guard import LocalModel, SemGradScorer  # noqa: E402
from semgrad_guard.policy import AuditTrail, Guard, load_policy  # noqa: E402
from semgrad_guard.review import open_review_queue  # noqa: E402

DOCUMENTS = [
    "Northwind Bikes accepts returns of unused bicycles within 30 days of delivery.",
    "Refunds from Northwind Bikes are paid to the original card within 5 business days.",
    "Every Northwind bicycle frame carries a 10-year warranty against cracks.",
    "Northwind Bikes ships to Canada, Mexico and the United States only.",
    "Standard shipping from Northwind Bikes takes 4 to 6 business days.",
    "The Northwind Bikes store in Portland opens at 9 am and closes at 6 pm.",
    "Northwind Bikes was founded in 2011 in Portland, Oregon.",
    "The Northwind Trail 3 is an aluminium hybrid bike that weighs 11 kilograms.",
    "Northwind electric bikes use a 500 watt-hour battery with a range of 80 kilometres.",
    "A free first service is included within 60 days of buying a Northwind bicycle.",
    "Northwind Bikes sells helmets, lights and locks, but not clothing.",
    "Customers can reach Northwind support by email at help@northwind.example.",
]

ANSWERABLE = "How much does the Northwind Trail 3 weigh?"
UNANSWERABLE = "What is the name of the Northwind founder's dog?"
CHAIN_NAME = "rag-support"
MAX_NEW_TOKENS = 24

POLICY_YAML = """\
version: 1
default:
  score: auto                        # the learned probability of error
  threshold: {max_error_probability: 0.6}
  actions: [abstain]
chains:
  - name: rag
    match: {run_name: ["rag", "rag-*"]}
    score: auto
    threshold: {max_error_probability: 0.6}   # measured: see the table in llamaindex_rag.py
    actions:
      - type: retry_with_retrieval
        attempts: 1
        k_schedule: [4]               # twice the engine's own 2 passages
        rewrite_query: "{question} Answer only from the passages."
      - type: escalate
        pending_message: "A support specialist will review this question and reply."
"""


def example_llm(model: LocalModel | None = None) -> SemGradLLM:
    """The default model, scored with its shipped profile (which carries the learned
    probability of error the policy reads)."""
    model = model or LocalModel.load()
    return SemGradLLM(model, scorer=SemGradScorer(model),
                      max_new_tokens=MAX_NEW_TOKENS)


def build_engine(llm: SemGradLLM, policy_path: str | Path, review_url: str,
                 audit: AuditTrail | None = None) -> GuardedQueryEngine:
    """The guarded query engine of the example over its twelve documents."""
    index = VectorStoreIndex.from_documents([Document(text=d) for d in DOCUMENTS],
                                            embed_model=OfflineMiniLMEmbedding())
    guard = Guard(load_policy(policy_path), scorer=llm.scorer, audit=audit or AuditTrail(),
                  review_queue=open_review_queue(review_url))
    return GuardedQueryEngine.from_index(index, guard, llm=llm, chain_name=CHAIN_NAME,
                                         similarity_top_k=2)


def describe(question: str, response: Response, seconds: float) -> str:
    """A readable account of one guarded answer: every attempt, then the decision."""
    decision: dict[str, Any] = (response.metadata or {})[DECISION_KEY]
    lines = [f"Q: {question}"]
    for a in decision["attempts"]:
        value = "unscored" if a["value"] is None else f"{a['value']:.3g}"
        verdict = "within threshold" if a["passed"] else "uncertain"
        k = a["k"] if a["k"] is not None else "own"
        lines.append(f"   attempt {a['number']} (k={k}): {a['answer']!r}  "
                     f"p_error {value} -> {verdict}")
    lines.append(f"   decision: {decision['action'].upper()} (rule {decision['rule']!r}, "
                 f"{seconds:.1f} s): {decision['reason']}")
    if decision["case_id"]:
        lines.append(f"   review case: {decision['case_id']}")
    lines.append(f"A: {response.response}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, llm: SemGradLLM | None = None
         ) -> list[Response]:
    """Answer both questions; print each decision and score. Returns the responses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="a policy YAML file (default: the one above)")
    parser.add_argument("--review-queue", help="review queue URL (default: a temporary "
                                               "SQLite file)")
    args = parser.parse_args(argv)
    llm = llm or example_llm()
    handler = UncertaintyEventHandler().attach()
    try:
        with tempfile.TemporaryDirectory() as folder:
            policy_path = args.policy or Path(folder) / "policy.yaml"
            if args.policy is None:
                Path(policy_path).write_text(POLICY_YAML, encoding="utf-8")
            review_url = args.review_queue or f"sqlite:///{Path(folder) / 'review.db'}"
            engine = build_engine(llm, policy_path, review_url)
            responses = []
            for question in (ANSWERABLE, UNANSWERABLE):
                start = time.perf_counter()
                response = engine.query(question)
                print(describe(question, response, time.perf_counter() - start), "\n")
                responses.append(response)
    finally:
        handler.detach()
    scored = [f"{r.scores['learned']:.2f}" if "learned" in r.scores else "unscored"
              for r in handler.records]
    print(f"LLM calls seen by the event handler: {len(handler.records)}; "
          f"probabilities of error: {', '.join(scored)}")
    return responses


if __name__ == "__main__":
    main(sys.argv[1:])
