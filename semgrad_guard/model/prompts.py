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

#: The user message of the reference setup (method.md, "Evaluating a score").
QA_INSTRUCTION = "Please directly answer the following question with one or few words:\n{question}"

#: What a plain prompt says before its demonstrations (a base model reads no chat turns).
PLAIN_INSTRUCTION = "Answer each question directly, with one or a few words."

# Unrelated questions with different endings: their prompts share only the format's tail.
_TAIL_PROBES = ("Xylophones hum", "Why do zebras sleep?", "quantum jelly 42")


def common_tail_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many final ids ``a`` and ``b`` have in common."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


#: The demonstrations of a plain prompt: short open questions with short answers, as
#: base-model open-QA evaluations show them (none is taken from an evaluation set).
PLAIN_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("How many legs does a spider have?", "Eight"),
    ("Which language is spoken in Brazil?", "Portuguese"),
    ("What do bees make from nectar?", "Honey"),
)


@dataclass(frozen=True)
class QAPrompt:
    """A question to answer in a few words, asked the way the model's prompt format asks.

    A chat format sends the reference user message (:data:`QA_INSTRUCTION`, the
    instruction and the question on two lines). A plain format asks the question as
    the question, after its instruction and demonstrations.

    >>> qa_prompt("Who wrote Hamlet?")
    QAPrompt(question='Who wrote Hamlet?')
    """

    question: str

    def chat_messages(self) -> list[dict[str, str]]:
        """The reference question-answering prompt: one user message, no system prompt."""
        return [{"role": "user", "content": QA_INSTRUCTION.format(question=self.question)}]


Prompt = str | Sequence[Message] | QAPrompt


def qa_prompt(question: str) -> QAPrompt:
    """The reference question-answering prompt for ``question``, in any prompt format."""
    return QAPrompt(question)


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A bare string is one user message; a :class:`QAPrompt` its chat message; message
    lists are copied as they are."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, QAPrompt):
        return list(prompt.chat_messages())
    messages = [dict(m) for m in prompt]
    for m in messages:
        if "role" not in m or "content" not in m:
            raise ConfigError(f"a chat message needs 'role' and 'content' keys, got {sorted(m)}")
    return messages


@dataclass(frozen=True)
class PromptFormat:
    """Chat template (instruct models) or a plain question-answer layout (base models).

    ``kind="auto"`` picks ``"chat"`` when the tokenizer has a chat template.

    A plain prompt is what base-model open-QA evaluations feed: system messages, then
    ``plain_instruction``, then the ``plain_examples`` demonstrations, then the
    conversation, each question as ``Question: ...`` and the prompt ending with
    ``Answer:``. Set ``plain_instruction=None`` or ``plain_examples=()`` to leave them
    out. Every part is in :meth:`fingerprint`, so a model profile calibrated on one
    layout is never applied to another.

    >>> fmt = PromptFormat(kind="plain", plain_examples=(("Who wrote Hamlet?", "Shakespeare"),))
    >>> print(fmt.render(None, qa_prompt("What is the capital of Italy?")))
    Answer each question directly, with one or a few words.
    <BLANKLINE>
    Question: Who wrote Hamlet?
    Answer: Shakespeare
    <BLANKLINE>
    Question: What is the capital of Italy?
    Answer:
    """

    kind: Literal["chat", "plain"] = "chat"
    system_prompt: str | None = None
    plain_user: str = "Question: {content}\nAnswer:"
    plain_assistant: str = " {content}\n\n"
    plain_system: str = "{content}\n\n"
    plain_instruction: str | None = PLAIN_INSTRUCTION
    plain_examples: tuple[tuple[str, str], ...] = PLAIN_EXAMPLES

    def __post_init__(self) -> None:
        for example in self.plain_examples:
            if len(example) != 2 or not all(isinstance(part, str) and part.strip()
                                            for part in example):
                raise ConfigError(f"a plain-prompt example is a (question, answer) pair of "
                                  f"non-empty strings, got {example!r}")

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
        """The conversation a prompt stands for (a plain format asks a
        :class:`QAPrompt`'s question as it is)."""
        if isinstance(prompt, QAPrompt) and self.kind == "plain":
            prompt = prompt.question
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
        templates = {"system": self.plain_system, "user": self.plain_user,
                     "assistant": self.plain_assistant}
        system = 0
        while system < len(msgs) and msgs[system]["role"] == "system":
            system += 1
        parts = [self.plain_system.format(content=m["content"]) for m in msgs[:system]]
        parts.append(self._plain_preamble())
        parts += [templates.get(m["role"], self.plain_user).format(content=m["content"])
                  for m in msgs[system:]]
        return "".join(parts)

    def _plain_preamble(self) -> str:
        """The instruction and the demonstrations, before the conversation."""
        parts = [] if self.plain_instruction is None else \
            [self.plain_system.format(content=self.plain_instruction)]
        for question, answer in self.plain_examples:
            parts.append(self.plain_user.format(content=question)
                         + self.plain_assistant.format(content=answer))
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
        last prompt token (the ``:`` of a plain prompt's final ``Answer:``, whatever
        preamble comes before). It reproduces the reference anchors of Llama-3 (-4) and
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
        """Stable hash of everything the format puts around a question (template, system
        prompt, the plain layout with its instruction and demonstrations)."""
        payload = {
            "kind": self.kind,
            "chat_template": getattr(tokenizer, "chat_template", None) if self.kind == "chat" else None,
            "system_prompt": self.system_prompt,
            "plain": {"system": self.plain_system, "user": self.plain_user,
                      "assistant": self.plain_assistant, "instruction": self.plain_instruction,
                      "examples": [list(e) for e in self.plain_examples]}
            if self.kind == "plain" else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
