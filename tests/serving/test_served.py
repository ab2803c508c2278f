"""Served answers: exact response ids rebuilt from a server's tokens, or a flagged fallback."""

from __future__ import annotations

import pytest

from semgrad_guard import Generation, SemGradScorer
from semgrad_guard.serving import (
    RemoteScorer,
    ScorerServer,
    ScorerServiceConfig,
    ServedAnswer,
    score_served,
)
from semgrad_guard.serving.served import served_response_ids
from tests.core.tiny import tiny_local_model

PROMPT = [{"role": "user", "content": "what is the color of the sky ?"}]
TOKEN = "a-long-random-scorer-token"


@pytest.fixture(scope="module")
def scorer() -> SemGradScorer:
    return SemGradScorer(tiny_local_model(), profile=None)


def _as_served(scorer: SemGradScorer, ids: list[int], finish: str = "stop",
               with_bytes: bool = True) -> ServedAnswer:
    """What an OpenAI-compatible server reports for these generated ids."""
    tok = scorer.model.tokenizer
    content = [{"token": tok.decode([i]), "logprob": -0.5,
                "bytes": list(tok.decode([i]).encode()) if with_bytes else None}
               for i in ids]
    return ServedAnswer.from_openai(tok.decode(ids, skip_special_tokens=True),
                                    {"content": content}, finish)


def test_the_servers_tokens_give_the_generated_ids(scorer: SemGradScorer) -> None:
    model = scorer.model
    ids = model.response_ids("the sky is blue and the sun is red")  # ends with end-of-turn
    generation = Generation(tuple(model.prompt_ids(PROMPT)), tuple(ids), "", "eos")
    served = _as_served(scorer, ids[:-1], "stop", with_bytes=False)
    assert served_response_ids(model, served) == ids
    score = score_served(scorer, PROMPT, served)
    assert not score.retokenized
    assert score.response_ids == tuple(ids)
    assert score.value == pytest.approx(scorer.score_generation(generation).value, rel=1e-5)


def test_a_stop_adds_the_end_of_turn_and_a_length_cut_does_not(scorer: SemGradScorer) -> None:
    ids = scorer.model.response_ids("blue sky")[:-1]
    eos = scorer.model.tokenizer.eos_token_id
    assert served_response_ids(scorer.model, _as_served(scorer, ids, "stop")) == [*ids, eos]
    assert served_response_ids(scorer.model, _as_served(scorer, ids, "length")) == ids
    direct = ServedAnswer("blue sky", "stop", token_ids=(*ids, eos))
    assert served_response_ids(scorer.model, direct) == [*ids, eos]


def test_tokens_that_do_not_spell_the_answer_fall_back_to_retokenising(
        scorer: SemGradScorer) -> None:
    ids = scorer.model.response_ids("blue sky")[:-1]
    unknown = ServedAnswer("blue sky", "stop", tokens=(b"blue", b"\xff\xfe"))
    other = ServedAnswer("red sun", "stop", tokens=_as_served(scorer, ids).tokens)
    for served in (unknown, other):
        assert served_response_ids(scorer.model, served) is None
        score = score_served(scorer, PROMPT, served)
        assert score.retokenized
        assert score.value == pytest.approx(scorer.score_text(PROMPT, served.text).value)
    assert score_served(scorer, PROMPT, ServedAnswer("blue sky", "stop")).retokenized


def test_the_service_rebuilds_the_ids_as_the_local_scorer_does(scorer: SemGradScorer) -> None:
    ids = scorer.model.response_ids("the sun")[:-1]
    served = _as_served(scorer, ids)
    assert ServedAnswer.from_dict(served.to_dict()) == served
    local = score_served(scorer, PROMPT, served)
    config = ScorerServiceConfig(token=TOKEN, port=0)
    with ScorerServer(scorer, config) as server, RemoteScorer(server.url, token=TOKEN) as remote:
        there = score_served(remote, PROMPT, served)
        fallback = score_served(remote, PROMPT, ServedAnswer("the sun", "stop",
                                                             tokens=(b"?!",)))
    assert not there.retokenized and there.response_ids == local.response_ids
    assert there.value == pytest.approx(local.value, rel=1e-5)
    assert fallback.retokenized

