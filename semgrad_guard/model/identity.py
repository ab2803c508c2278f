"""What a scorer's model must share with a model server: its tokenizer and chat template.

A generation made elsewhere (a llama.cpp, vLLM or Ollama server) can be scored here only
if both sides turn text into the same ids and render a conversation into the same
prompt. :class:`ModelIdentity` holds what a comparison needs: the ids of a fixed set of
probe texts (their hash is the tokenizer fingerprint) and the rendering of a probe
conversation. It is plain data, so a scoring service can send it to its clients.

>>> from semgrad_guard import LocalModel
>>> identity = ModelIdentity.of(LocalModel.load())
>>> identity.model, len(identity.tokenizer_fingerprint)
('SmolLM2-135M-Instruct', 16)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

#: Texts whose ids fingerprint a tokenizer: words, spacing, digits, code, accents, CJK,
#: emoji and the control sequences chat templates rely on.
PROBE_TEXTS = (
    "The capital of France is Paris.",
    "  two leading spaces, trailing tab\t",
    "Line one\nLine two\n\nLine four",
    "3.14159 + 2,718 = 5.85959; 1e-9 < 0x1F",
    "def f(x):\n    return {'a': [x, None]}",
    "naïve café, Straße, Ångström",
    "東京は日本の首都です。",
    "emoji: 🙂🚀",
)

#: A conversation whose rendering fingerprints a chat template. It has no system message,
#: so that a default system prompt (the template's, a server's or the scorer's) shows.
PROBE_MESSAGES = (
    {"role": "user", "content": "Which planet is called the red planet?"},
    {"role": "assistant", "content": "Mars"},
    {"role": "user", "content": "And the largest one?"},
)


def fingerprint(data: Any) -> str:
    """A short, stable hash of JSON-able data."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelIdentity:
    """The tokenizer and prompt rendering of a scorer's model, as plain data."""

    model: str
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    probe_ids: tuple[tuple[int, ...], ...]
    probe_prompt: str
    probe_prompt_ids: tuple[int, ...]
    template_fingerprint: str

    @property
    def tokenizer_fingerprint(self) -> str:
        """Hash of the probe texts' ids: equal tokenizers give equal fingerprints."""
        return fingerprint([list(ids) for ids in self.probe_ids])

    @classmethod
    def of(cls, model: Any) -> ModelIdentity:
        """The identity of a :class:`~semgrad_guard.LocalModel`."""
        tokenizer = model.tokenizer
        probe_ids = tuple(tuple(int(i) for i in tokenizer(text, add_special_tokens=False)
                                ["input_ids"]) for text in PROBE_TEXTS)
        messages = [dict(m) for m in PROBE_MESSAGES]
        return cls(model=str(model.name), vocab_size=len(tokenizer),
                   eos_token_ids=tuple(sorted(model.eos_ids)), probe_ids=probe_ids,
                   probe_prompt=model.prompt_format.render(tokenizer, messages),
                   probe_prompt_ids=tuple(model.prompt_ids(messages)),
                   template_fingerprint=model.prompt_format.fingerprint(tokenizer))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokenizer_fingerprint"] = self.tokenizer_fingerprint
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        return cls(model=str(data["model"]), vocab_size=int(data["vocab_size"]),
                   eos_token_ids=tuple(int(i) for i in data["eos_token_ids"]),
                   probe_ids=tuple(tuple(int(i) for i in ids) for ids in data["probe_ids"]),
                   probe_prompt=str(data["probe_prompt"]),
                   probe_prompt_ids=tuple(int(i) for i in data["probe_prompt_ids"]),
                   template_fingerprint=str(data["template_fingerprint"]))
