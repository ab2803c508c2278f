"""Stop strings that end an answer only once it has content.

transformers' ``StopStringCriteria`` stops a row as soon as its sequence ends with a stop
string. A base model asked ``Question: ...\\nAnswer:`` often breaks the line before it
answers; with ``"\\n"`` as the stop string that first newline would end an answer that
never began. :class:`StopAfterContent` keeps transformers' matching (stop strings that
span tokens, byte-level vocabularies) and adds one condition: the row has produced a
token with visible text. Whitespace and newlines before the first such token never stop
generation; the first stop string after it does.

It is an ordinary ``StoppingCriteria``: ``model.generate`` takes it in its
``stopping_criteria``, and a hand-written decode loop can call it on the ids so far.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Sequence
from typing import Any, Literal

import torch
from transformers import StoppingCriteria, StopStringCriteria

_BLANK_CACHE: weakref.WeakKeyDictionary[Any, torch.Tensor] = weakref.WeakKeyDictionary()


def blank_tokens(tokenizer: Any) -> torch.Tensor:
    """A boolean mask over the tokenizer's ids: ``True`` where a token alone decodes to
    nothing visible (whitespace, newlines, special tokens). Computed once per tokenizer."""
    try:
        return _BLANK_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))],
                                   skip_special_tokens=True)
    mask = torch.tensor([not text.strip() for text in texts], dtype=torch.bool)
    try:
        _BLANK_CACHE[tokenizer] = mask
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        pass
    return mask


class StopAfterContent(StoppingCriteria):
    """Stop a row on a stop string, once the row's answer has content.

    ``prompt_length`` is the width of the (left-padded) prompt columns: everything after
    it is the answer. ``stop_strings`` match as transformers matches them (a string may
    span several tokens or end inside one).

    >>> from transformers import AutoTokenizer                       # doctest: +SKIP
    >>> stop = StopAfterContent(tokenizer, ["\\n"], prompt_length=12)  # doctest: +SKIP
    >>> model.generate(ids, stopping_criteria=[stop])                 # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_length: int) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.prompt_length = int(prompt_length)
        self._match = StopStringCriteria(tokenizer, list(self.stop_strings)) \
            if self.stop_strings else None
        self._blank = blank_tokens(tokenizer) if self.stop_strings \
            else torch.zeros(0, dtype=torch.bool)

    def has_content(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per row: whether the answer so far holds a token with visible text (ids the
        tokenizer does not know count as content)."""
        answer = input_ids[:, self.prompt_length:]
        blank = self._blank.to(answer.device)
        known = answer < blank.numel()
        is_blank = torch.zeros_like(answer, dtype=torch.bool)
        is_blank[known] = blank[answer[known]]
        return (~is_blank).any(dim=1)

    def matches(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per row: whether the sequence ends with a stop string (content or not)."""
        if self._match is None or input_ids.shape[1] <= self.prompt_length:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self._match(input_ids, None).to(torch.bool)  # type: ignore[arg-type]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None,
                 **kwargs: Any) -> torch.BoolTensor:
        return self.matches(input_ids) & self.has_content(input_ids)  # type: ignore[return-value]

    def end_of_answer(self, prompt_ids: Sequence[int], tokens: Sequence[int],
                      eos_ids: Collection[int], pad_id: int
                      ) -> tuple[int, Literal["eos", "stop_string", "length"]]:
        """Where one row's answer ended in a finished batch, and why.

        ``model.generate`` pads a row that finished early to the batch's length, and the
        pad id is often the end-of-turn id: the first end-of-turn token is then not
        necessarily generated. A row ends at its first end-of-turn token, or where this
        criterion stopped it (the next token is padding, or there is none), whichever
        comes first; else it ran to the length limit (padding a caller's own criterion
        left after it dropped).
        """
        for i, token in enumerate(tokens):
            if token in eos_ids:
                return i + 1, "eos"
            if self.stop_strings and (i + 1 == len(tokens) or tokens[i + 1] == pad_id):
                ids = torch.tensor([[*prompt_ids, *tokens[:i + 1]]])
                if bool(self(ids, None)[0]):
                    return i + 1, "stop_string"
        end = len(tokens)
        while end and tokens[end - 1] == pad_id:
            end -= 1
        return end, "length"


def cut_at_stop(text: str, head: str, stop_strings: Sequence[str]) -> str:
    """``text`` before the stop string that ended it.

    ``head`` is the text without the last token: the stop string that ended generation
    reaches into the last token, so its occurrence ends after ``head``. Text with no
    such occurrence comes back whole.
    """
    starts = [at for s in stop_strings if s
              for at in (text.rfind(s),) if at >= 0 and at + len(s) > len(head)]
    return text[:min(starts)] if starts else text
