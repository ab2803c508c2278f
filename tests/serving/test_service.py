"""The shared scoring service and its client, on a real uvicorn server in this process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from semgrad_guard import SemGradScorer, UncertaintyScore, qa_prompt
from semgrad_guard.errors import (
    ConfigError,
    EmptyResponseError,
    RemoteScoringError,
    ScoringError,
    ServiceVersionError,
    TokenizerMismatchError,
)
from semgrad_guard.policy import AttemptResult, Guard, PolicyConfig
from semgrad_guard.serving import RemoteScorer, ScorerServer, ScorerServiceConfig
from tests.core.tiny import tiny_bpe_model, tiny_local_model

TOKEN = "a-long-random-scorer-token"
PROMPT = [{"role": "user", "content": "what is the color of the sky ?"}]


@pytest.fixture(scope="module")
def local() -> SemGradScorer:
    return SemGradScorer(tiny_local_model(), profile=None)


@pytest.fixture(scope="module")
def server(local: SemGradScorer) -> Iterator[ScorerServer]:
    # A long batching window, so that concurrent requests surely meet in one batch.
    config = ScorerServiceConfig(token=TOKEN, port=0, max_batch=16, max_wait_ms=150)
    with ScorerServer(local, config) as running:
        yield running


@pytest.fixture()
def remote(server: ScorerServer) -> Iterator[RemoteScorer]:
    with RemoteScorer(server.url, token=TOKEN) as scorer:
        yield scorer


def _ids(local: SemGradScorer, answer: str) -> tuple[list[int], list[int]]:
    model = local.model
    return model.prompt_ids(PROMPT), model.response_ids(answer)


def one(scorer: SemGradScorer | RemoteScorer, prompt_ids: list[int], response_ids: list[int]
        ) -> UncertaintyScore:
    return scorer.score_batch([(prompt_ids, response_ids)])[0]


def test_remote_scores_are_the_local_scores_whole(local: SemGradScorer,
                                                  remote: RemoteScorer) -> None:
    prompt_ids, response_ids = _ids(local, "blue sky")
    here = one(local, prompt_ids, response_ids)
    there = one(remote, prompt_ids, response_ids)
    assert there.to_dict() | {"timings": {}} == here.to_dict() | {"timings": {}}
    text = remote.score_text(PROMPT, "blue sky")
    assert text.retokenized and text.scores == pytest.approx(here.scores)
    assert remote.score_generation(local.model.generate(PROMPT, max_new_tokens=3)).value > 0
    many = remote.score_batch([_ids(local, a) for a in ("blue", "red sun", "the moon")])
    assert [s.response_ids for s in many] == [tuple(_ids(local, a)[1])
                                              for a in ("blue", "red sun", "the moon")]
    assert asyncio.run(remote.ascore_text(PROMPT, "blue sky")).scores == \
        pytest.approx(text.scores)


def test_a_base_models_plain_prompt_scores_as_in_process() -> None:
    """A QAPrompt travels as its question: a base model behind the service is scored on
    its plain prompt (instruction, demonstrations, ``Question: ...``), not on the chat
    rendering of the question."""
    base = SemGradScorer(tiny_bpe_model(chat=False), profile=None)
    assert base.model.prompt_format.kind == "plain"
    question = qa_prompt("what is the color of the sky?")
    config = ScorerServiceConfig(token=TOKEN, port=0, max_wait_ms=1)
    with ScorerServer(base, config) as server, RemoteScorer(server.url, token=TOKEN) as remote:
        here = base.score_text(question, "blue")
        there = remote.score_text(question, "blue")
        assert there.prompt_ids == here.prompt_ids == tuple(base.model.prompt_ids(question))
        assert there.response_ids == here.response_ids and there.retokenized
        assert there.scores == pytest.approx(here.scores, rel=0, abs=1e-6)
        assert asyncio.run(remote.ascore_text(question, "blue")).scores == \
            pytest.approx(here.scores, rel=0, abs=1e-6)
        # The chat rendering of the same question is another prompt with another score.
        chat = remote.score_text(question.chat_messages(), "blue")
        assert chat.prompt_ids != here.prompt_ids and chat.value != pytest.approx(here.value)
        assert remote.info()["wire_version"] == 2


def test_a_chat_models_question_scores_as_its_chat_message(local: SemGradScorer,
                                                          remote: RemoteScorer) -> None:
    question = qa_prompt("what is the color of the sky ?")
    here = local.score_text(question, "blue sky")
    as_question = remote.score_text(question, "blue sky")
    as_messages = remote.score_text(question.chat_messages(), "blue sky")
    assert as_question.prompt_ids == as_messages.prompt_ids == here.prompt_ids
    assert as_question.scores == pytest.approx(here.scores, rel=0, abs=1e-6)
    assert as_messages.scores == pytest.approx(here.scores, rel=0, abs=1e-6)


def test_a_service_before_question_items_says_so() -> None:
    """A service of wire version 1 refuses the ``question`` field with a 422 naming it;
    the client turns that into a ServiceVersionError, not a generic failure."""
    refusal = {"error": {"type": "BadRequest", "message": "bad score request: "
                         "items.0.question: Extra inputs are not permitted"}}
    old = httpx.MockTransport(lambda request: httpx.Response(422, json=refusal))
    with RemoteScorer("http://old-service", token=TOKEN, transport=old) as scorer:
        with pytest.raises(ServiceVersionError, match="predates wire version 2") as caught:
            scorer.score_text(qa_prompt("what is the color of the sky ?"), "blue")
    assert caught.value.status == 422 and isinstance(caught.value, RemoteScoringError)


def test_the_headline_method_is_the_clients(server: ScorerServer, local: SemGradScorer) -> None:
    with RemoteScorer(server.url, token=TOKEN, method="nll_per_token") as scorer:
        score = one(scorer, *_ids(local, "blue"))
    assert score.method == "nll_per_token" and score.value == score.scores["nll_per_token"]
    with pytest.raises(ConfigError, match="unknown score method"):
        RemoteScorer(server.url, token=TOKEN, method="vibes")


def test_concurrent_requests_are_scored_in_one_batch(server: ScorerServer,
                                                     local: SemGradScorer) -> None:
    answers = ["blue", "red", "green sky", "the sun", "one two", "yes", "no", "water"]
    before = server.app.state.batcher.batches
    results: dict[str, float] = {}
    barrier = threading.Barrier(len(answers))

    def ask(answer: str) -> None:
        with RemoteScorer(server.url, token=TOKEN) as scorer:
            barrier.wait()
            results[answer] = one(scorer, *_ids(local, answer)).value

    threads = [threading.Thread(target=ask, args=(a,)) for a in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches = server.app.state.batcher.batches - before
    assert batches < len(answers)  # requests shared passes
    for answer in answers:  # and each got its own answer's score
        assert results[answer] == pytest.approx(one(local, *_ids(local, answer)).value,
                                                rel=1e-4)
    metrics = httpx.get(f"{server.url}/metrics",
                        headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert "semgrad_scorer_batch_size_bucket" in metrics
    assert 'semgrad_scorer_answers_total{kind="ids"}' in metrics
    assert "semgrad_scorer_request_seconds_count" in metrics


def test_the_token_guards_everything_but_health(server: ScorerServer,
                                                local: SemGradScorer) -> None:
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    for path in ("/metrics", "/v1/model"):
        assert httpx.get(f"{server.url}{path}").status_code == 401
    with RemoteScorer(server.url, token="a-wrong-token-of-good-length") as wrong:
        with pytest.raises(RemoteScoringError, match="401") as caught:
            one(wrong, *_ids(local, "blue"))
    assert caught.value.status == 401
    with pytest.raises(ConfigError, match="scorer token must be at least 16"):
        ScorerServer(local, ScorerServiceConfig(token="short", port=0))
    with pytest.raises(ConfigError, match="at least 8 different"):  # long, but guessable
        ScorerServer(local, ScorerServiceConfig(token="ab" * 12, port=0))


def test_a_bad_item_fails_alone_with_its_typed_error(server: ScorerServer,
                                                     local: SemGradScorer,
                                                     remote: RemoteScorer) -> None:
    prompt_ids, response_ids = _ids(local, "blue")
    with pytest.raises(EmptyResponseError, match="empty response"):
        one(remote, prompt_ids, [])
    with pytest.raises(TokenizerMismatchError, match="outside the model's embedding"):
        one(remote, prompt_ids, [10_000])
    reply = httpx.post(f"{server.url}/v1/score", headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"items": [{"prompt_ids": prompt_ids, "response_ids": []},
                                       {"prompt_ids": prompt_ids,
                                        "response_ids": response_ids}]}).json()
    assert reply["results"][0]["error"]["type"] == "EmptyResponseError"
    assert reply["results"][1]["score"]["value"] == pytest.approx(
        one(local, prompt_ids, response_ids).value, rel=1e-4)
    bad = httpx.post(f"{server.url}/v1/score", headers={"Authorization": f"Bearer {TOKEN}"},
                     json={"items": [{"prompt_ids": [1], "answer": "x"}]})
    assert bad.status_code == 422 and "not both" in bad.json()["error"]["message"]
    both = httpx.post(f"{server.url}/v1/score", headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"items": [{"messages": "x", "question": "y", "answer": "z"}]})
    assert both.status_code == 422 and "messages or question" in both.json()["error"]["message"]
    junk = httpx.post(f"{server.url}/v1/score", headers={"Authorization": f"Bearer {TOKEN}"},
                      content=b"{not json")
    assert junk.status_code == 400
    metrics = httpx.get(f"{server.url}/metrics",
                        headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'semgrad_scorer_errors_total{type="EmptyResponseError"}' in metrics
    assert 'semgrad_scorer_requests_total{endpoint="score",status="422"}' in metrics


def test_an_unreachable_service_is_a_scoring_error() -> None:
    with RemoteScorer("http://127.0.0.1:9", token=TOKEN, timeout=2) as scorer:
        with pytest.raises(ScoringError, match="unreachable"):
            scorer.score_text(PROMPT, "blue")


def test_the_model_identity_travels(remote: RemoteScorer, local: SemGradScorer) -> None:
    from semgrad_guard.model.identity import ModelIdentity

    assert remote.identity() == ModelIdentity.of(local.model)
    assert remote.info()["anchor_offset"] == local.anchor.offset


def test_a_guard_decides_alike_on_remote_and_local_scores(local: SemGradScorer,
                                                          remote: RemoteScorer) -> None:
    question = "what is the color of the sky ?"
    answers = ("blue", "the sun the moon the sky water fire")
    low, high = sorted(answers, key=lambda a: local.score_text(question, a).value)
    cut = (local.score_text(question, low).value + local.score_text(question, high).value) / 2
    policy = PolicyConfig.from_dict({"version": 1, "default": {
        "threshold": {"max_score": cut}, "actions": ["abstain"]}})
    decisions = [Guard(policy, scorer=s).run(question, lambda a, ans=ans: AttemptResult(ans))
                 for ans in (low, high) for s in (local, remote)]
    assert [d.action for d in decisions] == ["pass", "pass", "abstain", "abstain"]
    assert decisions[0].score.scores == pytest.approx(decisions[1].score.scores)
    assert decisions[3].score.retokenized and "retokenized" in decisions[3].flags
    # A service that is down follows the rule's failure mode (fail closed by default).
    with RemoteScorer("http://127.0.0.1:9", token=TOKEN, timeout=2) as down:
        failed = Guard(policy, scorer=down).run(question, lambda a: AttemptResult(low))
    assert failed.action == "abstain" and "score_failed" in failed.flags


@pytest.mark.usefixtures("closed_event_loop")
def test_both_integrations_take_a_remote_scorer(local: SemGradScorer,
                                                remote: RemoteScorer) -> None:
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_semgrad_guard import SemGradCallbackHandler
    from llama_index.core.llms import ChatMessage, MockLLM
    from llama_index.llms.semgrad_guard import SemGradEvaluator, UncertaintyEventHandler

    expected = local.score_text(PROMPT, "blue sky").value
    handler = SemGradCallbackHandler(remote, max_score=expected * 2)
    chat = GenericFakeChatModel(messages=iter([AIMessage("blue sky")]))
    chat.invoke(PROMPT[0]["content"], config={"callbacks": [handler]})
    [record] = handler.records
    assert record.passed and record.retokenized and record.source == "retokenized"
    assert record.value == pytest.approx(expected, rel=1e-4)

    evaluator = SemGradEvaluator(scorer=remote, max_score=expected * 2)
    result = evaluator.evaluate(query=PROMPT[0]["content"], response="blue sky")
    assert result.passing and result.score == pytest.approx(expected, rel=1e-4)

    events = UncertaintyEventHandler(scorer=remote).attach()
    try:
        # MockLLM echoes its prompt: words the tiny tokenizer knows, so the answer has text.
        MockLLM().chat([ChatMessage(role="user", content=PROMPT[0]["content"])])
    finally:
        events.detach()
    [call] = [r for r in events.records if r.kind == "chat"]
    assert call.source == "handler" and call.retokenized and call.score is not None
