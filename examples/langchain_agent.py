"""A guarded agent: a certain tool call runs, an uncertain one is refused (abstain), an uncertain
email waits for a human reviewer, whose edit is what runs.

    python examples/langchain_agent.py

Runs offline on the default model (SmolLM2-135M-Instruct) with ``create_agent``, two
tools and ``SemGradMiddleware``: each model turn is scored once, the score is cached in
agent state, and each tool call is decided by the policy rule named after its tool.
The review queue is a SQLite file in a temporary folder; the "reviewer" here is the
script itself, editing the case through the queue's API.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
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

from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_semgrad_guard import ChatSemGrad, SemGradMiddleware, resume_from_review  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from semgrad_guard import LocalModel, SemGradScorer  # noqa: E402
from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig  # noqa: E402
from semgrad_guard.review import open_review_queue  # noqa: E402

#: Per-tool rules (a rule named after a tool decides that tool's calls): an uncertain
#: renewal is refused (abstain), an uncertain email goes to a reviewer. The threshold is on
#: the learned probability of error (``score: auto``) of the model's tool-call turn,
#: chosen from the measured probabilities below.
POLICY: dict[str, Any] = {
    "version": 1,
    "default": {"score": "auto", "threshold": {"max_error_probability": 0.5},
                "actions": [{"type": "abstain", "message": "Not confident enough."}]},
    "chains": [
        {"name": "renew_loan", "actions": [{"type": "abstain",
                                            "message": "Ask the user which book they mean."}]},
        {"name": "send_email", "actions": [{"type": "escalate"}]},
    ],
}

#: The learned probability of error of the model's tool-call turn for each request
#: (greedy, the shipped profile, SmolLM2-135M-Instruct, the two demonstration turns below):
#:
#:   "Renew my loan of The Hobbit."        renew_loan(title="The Hobbit")   0.49  right
#:   "Please renew my loan of Emma."       renew_loan(title="Dune")         0.51  wrong
#:   "Send a note to Sam saying thanks."   send_email(to="Sam@example.com") 0.57  invented
#:
#: 0.5 lies between the right call and the wrong one, but only 0.006 and 0.014 away from
#: them: the profile was fitted on question answering, and on tool calls the small model's
#: probabilities bunch together. It is stricter than the 0.6 the README suggests for
#: answers (0.5 passes 9% of the calibration answers), as a first deployment of a 135M
#: model acting through tools should be; measure your own calls before relying on it.
REQUESTS = [
    "Renew my loan of The Hobbit.",
    "Please renew my loan of Emma.",
    "Send a note to Sam saying thanks.",
]

SYSTEM = "You are the Harbor Lane Library assistant."


@tool(return_direct=True)
def renew_loan(title: str) -> str:
    """Renew a borrowed book for three more weeks."""
    return f"{title} is renewed until 12 June."


@tool(return_direct=True)
def send_email(to: str, body: str) -> str:
    """Send an email."""
    return f"Email sent to {to}: {body!r}"


#: Demonstrations of the tool-call format: a 135M model needs them.
DEMONSTRATIONS = [
    HumanMessage("Renew my loan of Dune."),
    AIMessage("", tool_calls=[{"name": "renew_loan", "args": {"title": "Dune"}, "id": "d1"}]),
    HumanMessage("Email ann@example.com that the book club meets on Friday."),
    AIMessage("", tool_calls=[{"name": "send_email", "id": "d2", "args": {
        "to": "ann@example.com", "body": "The book club meets on Friday."}}]),
]


def build_agent(model: LocalModel, review_url: str) -> tuple[Any, Guard]:
    """The agent, its guard (policy, audit trail, review queue)."""
    # The chat model scores with the model's profile, which carries the learned score.
    chat = ChatSemGrad(model=model, scorer=SemGradScorer(model),
                       max_new_tokens=48, tool_examples=DEMONSTRATIONS)
    guard = Guard(PolicyConfig.from_dict(POLICY), audit=AuditTrail(),
                  review_queue=open_review_queue(review_url))
    agent = create_agent(chat, tools=[renew_loan, send_email], system_prompt=SYSTEM,
                         middleware=[SemGradMiddleware(guard)], checkpointer=InMemorySaver())
    return agent, guard


def run(agent: Any, guard: Guard, request: str, thread: str) -> dict[str, Any]:
    """One request; an escalation is decided by the reviewer (here: an edit)."""
    config: Any = {"configurable": {"thread_id": thread}}
    result = agent.invoke({"messages": [{"role": "user", "content": request}]}, config)
    row: dict[str, Any] = {"request": request, "review": ""}
    while "__interrupt__" in result:  # a resumed run may pause again, for its next step
        interrupts = result["__interrupt__"]
        queue = guard.review_queue
        for paused in interrupts:
            value = paused.value
            if value.get("args") is None:  # an uncertain final answer: the reviewer approves
                queue.approve(value["case_id"], reviewer="librarian")
                continue
            # The reviewer fixes the recipient; the edited call is what runs.
            args = {**value["args"], "to": "sam@harborlane.org"}
            queue.edit(value["case_id"], answer=json.dumps(args), reviewer="librarian")
            row["review"] = f"case {value['case_id'][:8]}: edited to={args['to']}"
        result = agent.invoke(resume_from_review(interrupts, guard), config)
    turn = next(m for m in result["messages"] if isinstance(m, AIMessage) and m.tool_calls)
    gate = SemGradMiddleware.gate(result, turn.tool_calls[0]["id"]) or {}
    call = turn.tool_calls[0]
    outcome = next(m for m in reversed(result["messages"]) if isinstance(m, ToolMessage))
    row.update(call=f"{call['name']}({', '.join(f'{k}={v!r}' for k, v in call['args'].items())})",
               value=gate.get("value"), action=gate.get("action"),
               result=str(outcome.content), status=outcome.status)
    return row


def main(model: LocalModel | None = None) -> list[dict[str, Any]]:
    """Run the demo and print what happened to each request."""
    start = time.perf_counter()
    model = model or LocalModel.load()
    with tempfile.TemporaryDirectory() as folder:
        agent, guard = build_agent(model, f"sqlite:///{folder}/review.db")
        rows = [run(agent, guard, request, f"demo-{i}") for i, request in enumerate(REQUESTS)]
        audited = len(guard.audit) if guard.audit is not None else 0
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.2f}"
        print(f"{row['request']}\n    model called  {row['call']}\n"
              f"    p_error       {value} (threshold "
              f"{POLICY['default']['threshold']['max_error_probability']:g}"
              f", the probability that the call is wrong)\n    decision      {row['action']}"
              + (f" -> reviewer: {row['review']}" if row["review"] else "")
              + f"\n    tool message  [{row['status']}] {_short(row['result'])}\n")
    print(f"{audited} decisions in the audit trail; {time.perf_counter() - start:.1f} s")
    return rows


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    main()
