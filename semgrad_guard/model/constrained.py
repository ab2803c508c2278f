"""Constrained decoding: a generation held to a grammar, so that what it writes parses.

A :class:`Grammar` is a JSON schema (:meth:`Grammar.json_schema`) or a Lark grammar whose
rules may embed JSON schemas (:meth:`Grammar.lark`, with :meth:`Grammar.json_rule`); it is
checked when it is built. :meth:`Grammar.logits_processor` gives the transformers logits
processor that ``LocalModel.generate(..., logits_processor=[...])`` applies: at each step
only the tokens that keep the text inside the grammar stay possible, and once the grammar
is complete only the end of the turn. llguidance computes the allowed tokens.

JSON is written on one line with ``", "`` and ``": "`` between items (no free
whitespace), so a small model cannot spend its tokens on indentation.

The answer is still the model's own: its ids are what it generated, and scoring them
measures how sure the model was of the answer it was held to.

>>> from transformers import AutoTokenizer
>>> from semgrad_guard.model import default_model_path
>>> tokenizer = AutoTokenizer.from_pretrained(default_model_path())
>>> person = Grammar.json_schema({"type": "object", "required": ["name"],
...                              "properties": {"name": {"type": "string"}}})
>>> person.matches(tokenizer, '{"name": "Ada"}'), person.matches(tokenizer, '{"age": 3}')
(True, False)
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from ..errors import ConfigError

#: How constrained JSON is written: one line, fixed separators; keywords llguidance does
#: not implement are ignored rather than refused (the answer is validated when parsed).
JSON_FORMAT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ",
                               "key_separator": ": ", "lenient": True}

# Building llguidance's view of a vocabulary takes about a second: once per tokenizer.
_VOCABULARIES: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Any]] = (
    weakref.WeakKeyDictionary())


def _vocabulary(tokenizer: Any, eos_ids: Iterable[int] | None = None) -> Any:
    import llguidance.hf

    eos = tuple(sorted(eos_ids or ()))
    known = _VOCABULARIES.setdefault(tokenizer, {})
    if eos not in known:
        try:
            known[eos] = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos) or None)
        except ValueError as exc:
            raise ConfigError(f"constrained decoding needs a fast (tokenizers) tokenizer; "
                              f"{type(tokenizer).__name__} is not one: {exc}") from exc
    return known[eos]


class Grammar:
    """A grammar that constrained decoding holds a generation to.

    Build one with :meth:`json_schema` or :meth:`lark`; ``description`` says in words
    what it accepts (used in error messages).
    """

    def __init__(self, definition: str, description: str) -> None:
        from llguidance import LLMatcher

        failed, messages = LLMatcher.validate_grammar_with_warnings(definition)
        if failed:
            raise ConfigError(f"cannot constrain generation to {description}: "
                              f"{'; '.join(messages)}")
        self.definition = definition
        self.description = description

    @staticmethod
    def _formatted(schema: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(schema, Mapping):
            raise ConfigError(f"a JSON schema must be a JSON object, got {type(schema).__name__}")
        out = _closed(schema)
        out["x-guidance"] = {**JSON_FORMAT, **dict(out.get("x-guidance") or {})}
        return out

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any]) -> Grammar:
        """JSON text valid under ``schema`` (a JSON schema as a dict)."""
        from llguidance import LLMatcher

        definition = LLMatcher.grammar_from_json_schema(json.dumps(cls._formatted(schema)))
        return cls(definition, f"the JSON schema {json.dumps(dict(schema))[:200]}")

    @classmethod
    def json_rule(cls, schema: Mapping[str, Any]) -> str:
        """A Lark rule body for JSON valid under ``schema``, to use in :meth:`lark`.

        >>> Grammar.json_rule({"type": "integer"})[:26]
        '%json {"type": "integer", '
        """
        return "%json " + json.dumps(cls._formatted(schema), ensure_ascii=False)

    @classmethod
    def lark(cls, text: str, description: str = "a Lark grammar") -> Grammar:
        """Text in the language of a Lark grammar (llguidance's dialect, whose rules may
        embed JSON schemas: :meth:`json_rule`)."""
        from llguidance import LLMatcher

        return cls(LLMatcher.grammar_from_lark(text), description)

    def logits_processor(self, tokenizer: Any, eos_ids: Iterable[int] | None = None
                         ) -> LogitsProcessor:
        """A fresh logits processor holding one ``generate`` call to this grammar.

        ``eos_ids`` are the tokens that end a turn (``LocalModel.eos_ids``); the
        processor serves one call (it follows each row's tokens), so make one per call.
        """
        return _GrammarProcessor(self, _vocabulary(tokenizer, eos_ids))

    def matches(self, tokenizer: Any, text: str) -> bool:
        """Whether ``text`` is complete in this grammar (tokenised with ``tokenizer``)."""
        from llguidance import LLMatcher

        matcher = LLMatcher(_vocabulary(tokenizer), self.definition)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()

    def __repr__(self) -> str:
        return f"Grammar({self.description!r})"


# Keywords whose value is data, not a schema; and those whose value names schemas.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "x-guidance"})
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                            "dependentSchemas"})


def _closed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with every object that lists its properties closed to others, unless it
    says otherwise: generation fills in the fields asked for and invents no more.

    >>> _closed({"type": "object", "properties": {"a": {"properties": {}}}})
    {'type': 'object', 'properties': {'a': {'properties': {}, 'additionalProperties': False}}, 'additionalProperties': False}
    """
    def close(node: Any) -> Any:
        if isinstance(node, list):
            return [close(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DATA_KEYWORDS:
                out[key] = value
            elif key in _NAMED_SCHEMAS and isinstance(value, Mapping):
                out[key] = {name: close(sub) for name, sub in value.items()}
            else:
                out[key] = close(value)
        if isinstance(node.get("properties"), Mapping):
            out.setdefault("additionalProperties", False)
        return out

    return close(schema)  # type: ignore[no-any-return]


class _GrammarProcessor(LogitsProcessor):
    """Masks, row by row, the tokens the grammar does not allow next."""

    def __init__(self, grammar: Grammar, vocabulary: Any) -> None:
        self._grammar = grammar
        self._vocabulary = vocabulary
        self._matchers: list[Any] = []
        self._start = 0
        self._seen: list[int] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        from llguidance import LLMatcher

        if not self._matchers:  # the first step: everything so far is the prompt
            self._start = int(input_ids.shape[1])
            self._matchers = [LLMatcher(self._vocabulary, self._grammar.definition)
                              for _ in range(input_ids.shape[0])]
            self._seen = [0] * len(self._matchers)
        allowed = torch.zeros(scores.shape, dtype=torch.bool)
        for row, matcher in enumerate(self._matchers):
            new = input_ids[row, self._start + self._seen[row]:].tolist()
            self._seen[row] += len(new)
            if matcher.is_stopped():  # a finished row: generate pads it
                allowed[row] = True
                continue
            if new and not matcher.consume_tokens(new):
                raise ConfigError(f"the generation left {self._grammar.description}: "
                                  f"{matcher.get_error()}")
            bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8),
                                 bitorder="little")[: scores.shape[-1]]
            allowed[row, : bits.shape[0]] = torch.from_numpy(bits.astype(bool))
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))  # type: ignore[return-value]
