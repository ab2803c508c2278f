"""What the reviewer of a retried case sees, in a real Chromium: the rule, its threshold,
what the score measures, and every attempt side by side with the kept one marked."""

from __future__ import annotations

from typing import Any

from semgrad_guard.policy import AuditTrail, Guard, PolicyConfig
from semgrad_guard.review.server import ReviewServer
from semgrad_guard.testing import ScriptedScorer

from .conftest import REVIEW_TOKEN

SCREENSHOT = "/tmp/review_case_attempts.png"

#: The first answer is right but scored over the threshold; the retries, with wider
#: retrieval and a rewritten query, invent an answer that scores lower.
ANSWERS = ["Returns are accepted within 30 days with a receipt.",
           "You can return items within 90 days, no receipt needed.",
           "Returns are accepted for 90 days."]


def _escalate(server: ReviewServer, keep: str | None) -> str:
    rule: dict[str, Any] = {
        "name": "support-rag", "score": "semgrad", "threshold": {"max_score": 0.002},
        "actions": [{"type": "retry_with_retrieval", "k_schedule": [8, 16],
                     "rewrite_query": "{question} Answer from the passages."},
                    {"type": "escalate"}]}
    if keep is not None:
        rule["keep"] = keep
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": 0.01}}, "chains": [rule]})
    guard = Guard(policy, scorer=ScriptedScorer([0.0031, 0.0024, 0.0027]),
                  audit=AuditTrail(), review_queue=server.queue)

    def chain(attempt: Any) -> str:
        return ANSWERS[attempt.number]

    decision = guard.run("How long do I have to return shoes?", chain,
                         run_name="support-rag", metadata={"ticket": "T-88"})
    assert decision.action == "escalate" and decision.case_id
    return decision.case_id


def _log_in(page: Any, url: str) -> None:
    page.goto(url + "login")
    page.fill("#name", "alice")
    page.fill("#token", REVIEW_TOKEN)
    page.click("button[type=submit]")


def test_the_reviewer_sees_the_rule_the_threshold_and_every_attempt(
        browser: Any, browser_review_server: ReviewServer) -> None:
    server = browser_review_server
    case_id = _escalate(server, keep=None)  # the default, keep: first
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    _log_in(page, server.url)
    page.goto(server.url + f"cases/{case_id[:8]}")  # a prefix is enough
    assert page.url.endswith(f"/cases/{case_id}")

    threshold = " ".join(page.text_content("#threshold").split())
    assert "Rule support-rag passes an answer when its semgrad score is at or under " \
           "0.002." in threshold
    assert "None of its 3 attempts did." in threshold
    meaning = " ".join(page.text_content("#meaning").split())
    assert "semgrad measures how strongly the likelihood of the answer reacts" in meaning
    assert "Higher means the model was less certain" in meaning
    kept = " ".join(page.text_content("#kept").split())
    assert "attempt 0, the chain's first answer (keep: first)" in kept

    # The answer under review is the chain's own, correct one; the invented, lower-scoring
    # retries are beside it, not in its place.
    assert page.text_content("#answer") == ANSWERS[0]
    cards = page.locator("#attempts .attempt")
    assert cards.count() == 3
    texts = [" ".join(cards.nth(i).inner_text().split()) for i in range(3)]
    for number, (text, answer) in enumerate(zip(texts, ANSWERS, strict=True)):
        assert f"Attempt {number}" in text and answer in text
    assert "shown above" in texts[0] and "shown above" not in texts[1] + texts[2]
    assert "0.0031" in texts[0] and "0.0024" in texts[1] and "0.0027" in texts[2]
    assert "the chain's own" in texts[0] and "k=8" in texts[1] and "k=16" in texts[2]
    assert "Answer from the passages." in texts[1]
    # Side by side: the three cards share one row on a wide screen.
    boxes = [cards.nth(i).bounding_box() for i in range(3)]
    assert len({round(box["y"]) for box in boxes}) == 1
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    # The guard's bookkeeping is not repeated as metadata; the caller's is there.
    metadata = page.text_content("pre.mono")
    assert "T-88" in metadata and "chosen_attempt" not in metadata
    page.screenshot(path=SCREENSHOT, full_page=True)


def test_keep_best_score_sends_the_lowest_scoring_attempt_and_says_so(
        browser: Any, browser_review_server: ReviewServer) -> None:
    server = browser_review_server
    case_id = _escalate(server, keep="best_score")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    _log_in(page, server.url)
    page.goto(server.url + f"cases/{case_id}")
    assert page.text_content("#answer") == ANSWERS[1]
    assert "(keep: best_score)" in page.text_content("#kept")
    card = page.locator("#attempts .attempt.kept")
    assert "Attempt 1" in card.inner_text()
