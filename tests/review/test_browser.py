"""A reviewer's whole visit, in a real headless Chromium driven by Playwright."""

from __future__ import annotations

from semgrad_guard.review.server import ReviewServer

from .conftest import REVIEW_TOKEN

SCREENSHOT = "/tmp/review_page.png"
XSS = '<script>alert("pwned")</script><img src=x onerror="alert(1)">'


def test_a_reviewer_logs_in_and_decides_cases(browser: object,
                                             browser_review_server: ReviewServer) -> None:
    review_server = browser_review_server
    queue = review_server.queue
    first = queue.submit(
        chain="support-rag", question="How long do I have to return a pair of shoes?",
        answer="You can return them within 90 days, no receipt needed.", score=0.00231,
        components={"semgrad": 0.00231, "pg": 0.41, "mean_entropy": 2.13, "alpha": 0.5},
        context=["Returns: unworn items can be returned within 30 days with a receipt.",
                 "Store credit is offered for returns after 30 days, up to 60 days."],
        rule="support-rag", metadata={"user": "u-1042", "attempts": 2})
    second = queue.submit(chain="support-rag", question="Do you ship to Norway?",
                          answer=XSS, score=0.0041, context=["We ship within the EU."])
    third = queue.submit(chain="billing-agent", question="Refund order 1234 twice?",
                         answer="Refund issued twice.", score=0.0107)

    page = browser.new_page(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # Without the token: the login form, not the case.
    response = page.goto(review_server.url + f"cases/{first.id}")
    assert response.status == 401
    assert page.locator("input[name=token]").is_visible()
    assert "90 days" not in page.content()

    page.fill("#name", "alice")
    page.fill("#token", "a-wrong-token-123456")
    page.click("button[type=submit]")
    assert "Wrong token." in page.content()
    page.fill("#name", "alice")
    page.fill("#token", REVIEW_TOKEN)
    page.click("button[type=submit]")
    # Login returns to the case it was asked for.
    assert page.url.endswith(f"/cases/{first.id}")
    assert page.text_content("#question") == first.question
    assert page.text_content("#answer") == first.answer
    assert "Store credit is offered" in page.text_content("ol.context")  # type: ignore[operator]
    assert page.text_content("#score") == "0.00231"
    assert "Signed in as alice" in page.text_content("header")  # type: ignore[operator]
    page.screenshot(path=SCREENSHOT, full_page=True)

    page.click("button.approve")
    assert "Decision recorded: approved" in page.content()
    assert queue.get(first.id).status == "approved"
    assert queue.get(first.id).reviewer == "alice"

    # The queue shows what is left; the model's HTML is shown as text, never run.
    page.goto(review_server.url)
    rows = page.locator("tbody tr")
    assert rows.count() == 2
    page.click(f"a[href='/cases/{second.id}']")
    assert page.text_content("#answer") == XSS
    page.fill("#edit-answer", "Yes, we ship to Norway (customs fees apply).")
    page.fill("#edit-reason", "model output was markup")
    page.click("button.edit")
    decided = queue.get(second.id)
    assert (decided.status, decided.final_answer) == (
        "edited", "Yes, we ship to Norway (customs fees apply).")
    assert page.text_content("#final-answer") == decided.final_answer

    page.goto(review_server.url + f"cases/{third.id}")
    page.fill("#reject-reason", "double refund is against policy")
    page.click("button.reject")
    assert queue.get(third.id).reason == "double refund is against policy"

    page.goto(review_server.url)
    assert "No pending cases." in page.content()
    assert queue.counts() == {"pending": 0, "approved": 1, "edited": 1, "rejected": 1}
    page.goto(review_server.url + "?status=all")
    assert page.locator("tbody tr").count() == 3
    assert dialogs == []  # no script from a case ever ran

    # Logging out ends the session.
    page.click("header button")
    response = page.goto(review_server.url)
    assert response.status == 401
