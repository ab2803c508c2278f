"""Escalate an uncertain answer to a human and wait for the decision.

    SEMGRAD_GUARD_REVIEW_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe())') \
        python examples/review_escalation.py

Open the printed URL, log in with the token, and approve, edit or reject the case; the
script prints what the user would receive. ``semgrad-guard review list`` and
``semgrad-guard review approve ID`` do the same from another terminal.
"""

from __future__ import annotations

import os
import sys

from pydantic import SecretStr

from semgrad_guard.review import (
    DecisionTimeoutError,
    ReviewServer,
    ReviewServerConfig,
    open_review_queue,
)


def main() -> int:
    token = os.environ.get("SEMGRAD_GUARD_REVIEW_TOKEN")
    if not token:
        print("set SEMGRAD_GUARD_REVIEW_TOKEN (16+ characters, 8 of them different) first", file=sys.stderr)
        return 2
    queue = open_review_queue()  # <cache>/review.db
    # Fires for decisions made on the page served below (it uses this queue object);
    # decisions from the command line reach wait() through the database instead.
    queue.on_decision(lambda case: print(f"decided: {case.status} by {case.reviewer}"))
    case = queue.submit(
        chain="support-rag", question="How long is the refund window?",
        answer="You have 90 days to ask for a refund.", score=0.0023,
        components={"semgrad": 0.0023, "pg": 0.41},
        context=["Refunds are accepted within 30 days of delivery."], rule="support-rag")
    with ReviewServer(queue, ReviewServerConfig(token=SecretStr(token), port=8765)) as server:
        print(f"case {case.id} is waiting at {server.url}cases/{case.id}")
        try:
            decided = queue.wait(case.id, timeout=600)
        except DecisionTimeoutError:
            print("nobody decided within 10 minutes; the case stays pending")
            return 1
    if decided.final_answer is None:
        print(f"rejected: {decided.reason or 'no reason given'}")
    else:
        print(f"the user receives: {decided.final_answer}")
    queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
