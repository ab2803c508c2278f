"""The start-up check that a model server and the scorer hold the same model.

Scoring a served answer with local weights is only right if the server tokenises and
renders prompts exactly as the scorer does. :func:`check_served_model` asks the server,
over its own OpenAI-compatible API:

1. **tokenizer**: the ids of fixed probe texts, through the server's tokenize endpoint
   (llama.cpp and vLLM ``/tokenize``, llama-cpp-python ``/extras/tokenize``), must hash
   to the scorer's tokenizer fingerprint;
2. **chat template**: a probe conversation sent as chat must cost the server as many
   prompt tokens as the scorer's rendering has, and where the server also completes raw
   text, the scorer's rendering sent as raw text must give the same first-token
   log-probabilities as the chat request (same ids in, same numbers out).

Any disagreement raises :class:`~semgrad_guard.errors.ServedModelMismatchError`; a check
the server cannot answer (no tokenize endpoint, no log-probabilities) is reported as
unavailable in the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ServedModelMismatchError
from ..model.identity import PROBE_MESSAGES, PROBE_TEXTS, ModelIdentity, fingerprint

# First-token log-probabilities of a chat request and of its rendering sent as raw text
# come from the same ids on the same server; they may differ only by batching noise.
_LOGPROB_TOLERANCE = 0.02


@dataclass(frozen=True)
class ServedModelCheck:
    """What the start-up check found. ``checks`` maps each check to ``"agrees"`` or
    ``"unavailable: <why>"``."""

    base_url: str
    served_model: str | None
    scorer_model: str
    tokenizer_fingerprint: str
    prompt_tokens: int
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every check could run (and so agreed)."""
        return all(v == "agrees" for v in self.checks.values())


def identity_of(scorer: Any) -> ModelIdentity:
    """The identity of a scorer's model: a ``LocalModel``, a scorer holding one
    (``.model``), or a :class:`~semgrad_guard.serving.RemoteScorer` (asks its service)."""
    if isinstance(scorer, ModelIdentity):
        return scorer
    remote = getattr(scorer, "identity", None)
    if callable(remote):
        return remote()  # type: ignore[no-any-return]
    for model in (scorer, getattr(scorer, "model", None)):  # a LocalModel, or a scorer's
        if hasattr(model, "tokenizer") and hasattr(model, "prompt_format"):
            return ModelIdentity.of(model)
    raise TypeError(f"cannot tell which model {type(scorer).__name__} scores with")


def _root(base_url: str) -> str:
    """The server's root: OpenAI base URLs end in ``/v1``; tokenize endpoints do not."""
    url = base_url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def check_served_model(base_url: str, scorer: Any, *, api_key: str | None = None,
                       model: str | None = None, timeout: float = 60.0,
                       transport: Any = None) -> ServedModelCheck:
    """Check that the OpenAI-compatible server at ``base_url`` (``http://host:port/v1``)
    serves the scorer's model; raise :class:`ServedModelMismatchError` if not.

    >>> check = check_served_model("http://127.0.0.1:8080/v1", scorer)  # doctest: +SKIP
    >>> check.checks                                                   # doctest: +SKIP
    {'tokenizer': 'agrees', 'chat_template': 'agrees', 'first_token': 'agrees'}
    """
    import httpx

    identity = identity_of(scorer)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(headers=headers, timeout=timeout, transport=transport) as client:
        probe = _Probe(client, base_url.rstrip("/"), model)
        served = probe.served_model()
        checks: dict[str, str] = {}
        checks["tokenizer"] = _check_tokenizer(probe, identity)
        chat = probe.chat_first_token()
        prompt_tokens = _prompt_tokens(chat)
        if prompt_tokens != len(identity.probe_prompt_ids):
            raise ServedModelMismatchError(
                f"the server at {base_url} renders the probe conversation into "
                f"{prompt_tokens} prompt tokens, the scorer's chat template "
                f"({identity.model}) into {len(identity.probe_prompt_ids)}: the served "
                f"model's chat template or system prompt differs from the scorer's")
        checks["chat_template"] = "agrees"
        checks["first_token"] = _check_first_token(probe, identity, chat, base_url)
    return ServedModelCheck(base_url=base_url, served_model=served, scorer_model=identity.model,
                            tokenizer_fingerprint=identity.tokenizer_fingerprint,
                            prompt_tokens=prompt_tokens, checks=checks)


class _Probe:
    """The few requests the check sends."""

    def __init__(self, client: Any, base_url: str, model: str | None) -> None:
        self.client = client
        self.base_url = base_url
        self.root = _root(base_url)
        self.model = model

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            response = self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ServedModelMismatchError(f"cannot reach the model server at {url}: "
                                           f"{type(exc).__name__}: {exc}") from exc
        return response

    def served_model(self) -> str | None:
        import httpx

        if self.model is None:
            try:
                response = self.client.get(f"{self.base_url}/models")
                data = response.json().get("data") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                data = None
            if isinstance(data, list) and data and isinstance(data[0], Mapping):
                self.model = str(data[0].get("id"))
        return self.model

    def _with_model(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.model} if self.model else body

    def tokenize(self, text: str) -> list[int] | None:
        """The server's ids for ``text`` without special tokens; None without an endpoint."""
        attempts = (
            (f"{self.root}/tokenize", {"content": text, "prompt": text, "add_special": False,
                                       "add_special_tokens": False}),
            (f"{self.root}/extras/tokenize", {"input": text}),
        )
        for url, body in attempts:
            response = self._post(url, self._with_model(body))
            if response.status_code != 200:
                continue
            try:
                tokens = response.json().get("tokens")
            except (ValueError, AttributeError):
                continue
            if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
                return [int(t) for t in tokens]
            if isinstance(tokens, list) and all(isinstance(t, Mapping) for t in tokens):
                return [int(t["id"]) for t in tokens]  # llama.cpp with_pieces
        return None

    def chat_first_token(self) -> dict[str, Any]:
        body = self._with_model({"messages": [dict(m) for m in PROBE_MESSAGES],
                                 "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                                 "top_logprobs": 5})
        response = self._post(f"{self.base_url}/chat/completions", body)
        if response.status_code != 200:
            raise ServedModelMismatchError(
                f"the model server at {self.base_url} refused a probe chat completion "
                f"({response.status_code}: {response.text[:200]})")
        return dict(response.json())

    def raw_first_token(self, prompt: str) -> dict[str, Any] | None:
        body = self._with_model({"prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                                 "logprobs": 5})
        response = self._post(f"{self.base_url}/completions", body)
        return dict(response.json()) if response.status_code == 200 else None


def _check_tokenizer(probe: _Probe, identity: ModelIdentity) -> str:
    served: list[list[int]] = []
    for text, ours in zip(PROBE_TEXTS, identity.probe_ids, strict=True):
        ids = probe.tokenize(text)
        if ids is None:
            return "unavailable: the server has no tokenize endpoint"
        if len(ids) == len(ours) + 1 and tuple(ids[1:]) == ours:
            ids = ids[1:]  # the endpoint added its begin-of-sequence token
        served.append(ids)
    theirs = fingerprint(served)
    if theirs != identity.tokenizer_fingerprint:
        text, mine, ids = next((t, list(o), s) for t, o, s in zip(
            PROBE_TEXTS, identity.probe_ids, served, strict=True) if list(o) != s)
        raise ServedModelMismatchError(
            f"the served model's tokenizer (fingerprint {theirs}) differs from the scorer's "
            f"({identity.model}, fingerprint {identity.tokenizer_fingerprint}): {text!r} is "
            f"{ids[:12]} on the server and {mine[:12]} here")
    return "agrees"


def _prompt_tokens(reply: Mapping[str, Any]) -> int:
    usage = reply.get("usage") or {}
    value = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    if not isinstance(value, int):
        raise ServedModelMismatchError("the model server reports no usage.prompt_tokens; "
                                       "cannot compare its prompt rendering")
    return value


def _top_chat(reply: Mapping[str, Any]) -> dict[str, float] | None:
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
        return {str(e["token"]): float(e["logprob"]) for e in first["top_logprobs"]}
    except (KeyError, IndexError, TypeError):
        return None


def _top_raw(reply: Mapping[str, Any]) -> dict[str, float] | None:
    try:
        top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
        if isinstance(top, Mapping):
            return {str(k): float(v) for k, v in top.items()}
        return {str(e["token"]): float(e["logprob"]) for e in top}
    except (KeyError, IndexError, TypeError):
        return None


def _check_first_token(probe: _Probe, identity: ModelIdentity, chat: Mapping[str, Any],
                       base_url: str) -> str:
    chat_top = _top_chat(chat)
    if not chat_top:
        return "unavailable: the server returns no log-probabilities for chat"
    raw = probe.raw_first_token(identity.probe_prompt)
    raw_top = _top_raw(raw) if raw is not None else None
    if raw is None or not raw_top:
        return "unavailable: the server completes no raw text with log-probabilities"
    if _prompt_tokens(raw) != len(identity.probe_prompt_ids):
        raise ServedModelMismatchError(
            f"the server tokenises the scorer's rendering of the probe conversation into "
            f"{_prompt_tokens(raw)} tokens, the scorer into {len(identity.probe_prompt_ids)}")
    best_chat = max(chat_top, key=lambda k: chat_top[k])
    best_raw = max(raw_top, key=lambda k: raw_top[k])
    shared = set(chat_top) & set(raw_top)
    worst = max((abs(chat_top[k] - raw_top[k]) for k in shared), default=math.inf)
    if best_chat != best_raw or worst > _LOGPROB_TOLERANCE:
        raise ServedModelMismatchError(
            f"the server at {base_url} renders the probe conversation differently from the "
            f"scorer's chat template: its first answer token is {best_chat!r} as chat and "
            f"{best_raw!r} from the scorer's rendering (largest log-probability gap "
            f"{worst:.3g})")
    return "agrees"
