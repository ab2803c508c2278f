"""The client of the scoring service: a scorer that plugs in wherever a local one does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, RemoteScoringError, ServiceVersionError
from ..model.generation import Generation
from ..model.identity import ModelIdentity
from ..model.prompts import Prompt, QAPrompt, as_messages
from ..scoring.result import SCORE_NAMES, UncertaintyScore
from .served import ServedAnswer
from .wire import MAX_ITEMS, WIRE_VERSION, error_from_dict, score_from_dict

#: Environment variable holding the service token (client and ``serve-scorer``).
TOKEN_ENV = "SEMGRAD_GUARD_SCORER_TOKEN"


class RemoteScorer:
    """Scores answers on a scoring service (``semgrad-guard serve-scorer``, or the Ray
    Serve deployment) instead of a model in this process.

    It has the entry points of a local ``SemGradScorer`` that the guard and both
    integrations use (``score_batch``, ``score_generation``, ``score_text``) and their
    async twins; the
    service computes every score, and ``method`` picks the headline one. Failures
    (service down, wrong token, an answer the model cannot score) raise
    :class:`~semgrad_guard.errors.ScoringError` subclasses, so a guard applies its
    configured failure mode.

    >>> from semgrad_guard.serving import RemoteScorer
    >>> scorer = RemoteScorer("http://127.0.0.1:8766", token="a-long-random-scorer-token")
    >>> scorer.method
    'semgrad'

    ``transport`` / ``async_transport`` replace the network (an ``httpx`` transport).
    """

    def __init__(self, url: str, token: str | None = None, *, method: str = "semgrad",
                 timeout: float = 120.0, transport: Any = None,
                 async_transport: Any = None) -> None:
        import httpx

        if method not in SCORE_NAMES:
            raise ConfigError(f"unknown score method {method!r}; allowed: {', '.join(SCORE_NAMES)}")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        if not token:
            raise ConfigError(f"the scoring service needs its token: pass token= or set "
                              f"{TOKEN_ENV}")
        self.url = url.rstrip("/")
        self.method = method
        headers = {"Authorization": f"Bearer {token}"}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                    transport=transport)
        self._async_options = {"base_url": self.url, "headers": headers, "timeout": timeout,
                               "transport": async_transport}
        self._identity: ModelIdentity | None = None

    # -- sync ------------------------------------------------------------------------------
    def score_batch(self, items: Sequence[Generation | tuple[Sequence[int], Sequence[int]]],
                    *, retokenized: bool = False, **_: Any) -> list[UncertaintyScore]:
        """Score answers you already have: generations (by their exact ids) or
        ``(prompt_ids, response_ids)`` pairs, in one request."""
        scores = self._post([_ids_item(item) for item in items])
        return [_flagged(s) for s in scores] if retokenized else scores

    def score_generation(self, generation: Generation, **_: Any) -> UncertaintyScore:
        """Score a generation by its exact ids."""
        return self.score_batch([generation])[0]

    def score_text(self, prompt: Prompt, response: str) -> UncertaintyScore:
        """Score an answer known only as text; the service re-tokenises it (flagged).

        A :class:`~semgrad_guard.QAPrompt` travels as its question, and the service asks
        it in its model's prompt format (a base model's plain prompt included), so the
        score is the one its scorer would give in process."""
        [score] = self._post([_text_item(prompt, response)])
        return score

    def score_served(self, prompt: Prompt, served: ServedAnswer) -> UncertaintyScore:
        """Score an answer a model server generated, from its tokens where they map."""
        [score] = self._post([_text_item(prompt, served.text, served.to_dict())])
        return score

    def identity(self) -> ModelIdentity:
        """The service model's tokenizer and chat-template identity."""
        if self._identity is None:
            self._identity = ModelIdentity.from_dict(self.info()["identity"])
        return self._identity

    def info(self) -> dict[str, Any]:
        """The service's model, method, anchor and identity."""
        return dict(self._json(self._send("GET", "/v1/model")))

    def health(self) -> dict[str, Any]:
        return dict(self._json(self._send("GET", "/healthz")))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- async -----------------------------------------------------------------------------
    async def ascore_batch(self, items: Sequence[Generation | tuple[Sequence[int],
                                                                    Sequence[int]]]
                           ) -> list[UncertaintyScore]:
        """The async twin of :meth:`score_batch`."""
        return await self._apost([_ids_item(item) for item in items])

    async def ascore_generation(self, generation: Generation, **_: Any) -> UncertaintyScore:
        """The async twin of :meth:`score_generation`."""
        return (await self.ascore_batch([generation]))[0]

    async def ascore_text(self, prompt: Prompt, response: str) -> UncertaintyScore:
        """The async twin of :meth:`score_text`."""
        [score] = await self._apost([_text_item(prompt, response)])
        return score

    # -- the wire ---------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> RemoteScoringError:
        return RemoteScoringError(f"scoring service at {self.url} unreachable: "
                                  f"{type(exc).__name__}: {exc}")

    def _json(self, response: Any) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200:
            error = (data or {}).get("error") if isinstance(data, dict) else None
            detail = error.get("message") if isinstance(error, dict) else response.text[:200]
            if response.status_code == 422 and _refuses_questions(str(detail)):
                raise ServiceVersionError(
                    f"the scoring service at {self.url} predates wire version "
                    f"{WIRE_VERSION}: it cannot ask a QAPrompt's question in its model's "
                    f"prompt format; upgrade the service, or send chat messages "
                    f"(qa_prompt(q).chat_messages()) if its model is a chat model",
                    status=422)
            raise RemoteScoringError(f"scoring service at {self.url} answered "
                                     f"{response.status_code}: {detail}",
                                     status=response.status_code)
        return data

    def _body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"items": items, "method": self.method}

    def _scores(self, data: Any, expected: int) -> list[UncertaintyScore]:
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or len(results) != expected:
            raise RemoteScoringError(f"scoring service at {self.url} sent a malformed reply")
        scores = []
        for result in results:
            if "error" in result:
                raise error_from_dict(result["error"])
            scores.append(score_from_dict(result["score"]))
        return scores

    def _post(self, items: list[dict[str, Any]]) -> list[UncertaintyScore]:
        if len(items) > MAX_ITEMS:
            return [s for at in range(0, len(items), MAX_ITEMS)
                    for s in self._post(items[at:at + MAX_ITEMS])]
        response = self._send("POST", "/v1/score", json=self._body(items))
        return self._scores(self._json(response), len(items))

    async def _apost(self, items: list[dict[str, Any]]) -> list[UncertaintyScore]:
        import httpx

        if len(items) > MAX_ITEMS:
            return [s for at in range(0, len(items), MAX_ITEMS)
                    for s in await self._apost(items[at:at + MAX_ITEMS])]
        try:
            async with httpx.AsyncClient(**self._async_options) as client:
                response = await client.post("/v1/score", json=self._body(items))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._scores(self._json(response), len(items))


def _refuses_questions(detail: str) -> bool:
    """Whether a 422 is a service of wire version 1 refusing a ``question`` field."""
    return "question" in detail and "extra" in detail.lower()


def _text_item(prompt: Prompt, answer: str, served: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """A text item: a QAPrompt as its question (the service asks it in its model's
    format), any other prompt as chat messages."""
    item: dict[str, Any] = ({"question": prompt.question} if isinstance(prompt, QAPrompt)
                            else {"messages": as_messages(prompt)})
    item["answer"] = answer
    if served is not None:
        item["served"] = served
    return item


def _ids_item(item: Generation | tuple[Sequence[int], Sequence[int]]) -> dict[str, Any]:
    prompt_ids, response_ids = (item.prompt_ids, item.response_ids) \
        if isinstance(item, Generation) else item
    return {"prompt_ids": [int(i) for i in prompt_ids],
            "response_ids": [int(i) for i in response_ids]}


def _flagged(score: UncertaintyScore) -> UncertaintyScore:
    import dataclasses

    return dataclasses.replace(score, retokenized=True)
