"""How questions and chat messages become the exact prompt ids a model sees."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from .text import tokenizable

Message = Mapping[str, Any]
Prompt = str | Sequence[Message]

#: The user message of the reference setup (method.md, "Evaluating a score").
QA_INSTRUCTION = "Please directly answer the following question with one or few words:\n{question}"


# Unrelated questions with different endings: their prompts share only the format's tail.
_TAIL_PROBES = ("Xylophones hum", "Why do zebras sleep?", "quantum jelly 42")


def common_tail_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many final ids ``a`` and ``b`` have in common."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def qa_prompt(question: str) -> list[dict[str, str]]:
    """The reference question-answering prompt: one user message, no system prompt."""
    return [{"role": "user", "content": QA_INSTRUCTION.format(question=question)}]


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A bare string is one user message; message lists are copied as they are."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = [dict(m) for m in prompt]
    for m in messages:
        if "role" not in m or "content" not in m:
            raise ConfigError(f"a chat message needs 'role' and 'content' keys, got {sorted(m)}")
    return messages


@dataclass(frozen=True)
class PromptFormat:
    """Chat template (instruct models) or a plain question-answer layout (base models).

    ``kind="auto"`` picks ``"chat"`` when the tokenizer has a chat template.
    """

    kind: Literal["chat", "plain"] = "chat"
    system_prompt: str | None = None
    plain_user: str = "Question: {content}\nAnswer:"
    plain_assistant: str = " {content}\n"
    plain_system: str = "{content}\n\n"

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, kind: str = "auto", system_prompt: str | None = None
                      ) -> PromptFormat:
        if kind == "auto":
            kind = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        if kind not in ("chat", "plain"):
            raise ConfigError(f"prompt format {kind!r} is not one of 'auto', 'chat', 'plain'")
        if kind == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError("prompt format 'chat' needs a tokenizer with a chat template; "
                              "use 'plain' for base models")
        return cls(kind=kind, system_prompt=system_prompt)  # type: ignore[arg-type]

    def messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        msgs = as_messages(prompt)
        for m in msgs:  # the position is named in the user's own text, not the rendered one
            if isinstance(m.get("content"), str):
                tokenizable(m["content"], f"the prompt's {m.get('role', 'user')} message")
        if self.system_prompt is not None and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def render(self, tokenizer: Any, prompt: Prompt, tools: Sequence[Any] | None = None) -> str:
        """The prompt text, generation header included."""
        msgs = self.messages(prompt)
        if self.kind == "chat":
            text = tokenizer.apply_chat_template(
                msgs, tools=list(tools) if tools else None, add_generation_prompt=True,
                tokenize=False,
            )
            return str(text)
        parts = []
        for m in msgs:
            template = {"system": self.plain_system, "user": self.plain_user,
                        "assistant": self.plain_assistant}.get(m["role"], self.plain_user)
            parts.append(template.format(content=m["content"]))
        return "".join(parts)

    def encode(self, tokenizer: Any, prompt: Prompt, tools: Sequence[Any] | None = None
               ) -> list[int]:
        """Exact prompt ids; the chat template's own special tokens are kept as they are."""
        text = self.render(tokenizer, prompt, tools)
        # A chat template writes its own BOS where the model wants one.
        add_special = self.kind == "plain"
        text = tokenizable(text, "the rendered prompt")
        return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def header_length(self, tokenizer: Any) -> int:
        """Tokens the generation header adds after the last user turn (0 for plain)."""
        if self.kind != "chat":
            return 0
        msgs = [{"role": "user", "content": "x"}]
        if self.system_prompt is not None:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        with_header = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        without = tokenizer.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
        if not str(with_header).startswith(str(without)):
            return 0
        suffix = str(with_header)[len(str(without)):]
        return len(tokenizer(suffix, add_special_tokens=False)["input_ids"])

    def default_anchor_offset(self, tokenizer: Any) -> int:
        """The uncalibrated anchor: the first token of the assistant header, else the
        last prompt token. It reproduces the reference anchors of Llama-3 (-4) and
        ChatML models such as Qwen (-3)."""
        n = self.header_length(tokenizer)
        return -n if n > 0 else -1

    def fixed_tail_length(self, tokenizer: Any) -> int:
        """How many final prompt tokens the format writes after the user's message, the
        same whatever the message: the anchor offsets outside the question text are
        ``-1 .. -fixed_tail_length``."""
        probes = [self.encode(tokenizer, qa_prompt(q)) for q in _TAIL_PROBES]
        return min(common_tail_length(probes[0], p) for p in probes[1:])

    def fingerprint(self, tokenizer: Any) -> str:
        """Stable hash of everything that shapes the prompt's tail."""
        payload = {
            "kind": self.kind,
            "chat_template": getattr(tokenizer, "chat_template", None) if self.kind == "chat" else None,
            "system_prompt": self.system_prompt,
            "plain": [self.plain_system, self.plain_user, self.plain_assistant]
            if self.kind == "plain" else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
