"""P(True): ask the model whether its own answer is true (Kadavath et al., 2022).

The model sees the question and its answer and is asked to reply True or False; the
score is ``1 - P(True)``, with ``P(True)`` the next-token probability mass on the
spellings of "True" and "Yes", renormalised against "False" and "No" so that mass the
model puts on other tokens does not count as doubt. One forward pass per answer,
batched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from semgrad_guard.model.local_model import LocalModel

PTRUE_INSTRUCTION = ("Question: {question}\nProposed answer: {answer}\n"
                     "Is the proposed answer true? Reply with one word, True or False.")

_TRUE = ("True", " True", "true", " true", "Yes", " Yes", "yes", " yes")
_FALSE = ("False", " False", "false", " false", "No", " No", "no", " no")


def _first_tokens(lm: LocalModel, spellings: Sequence[str]) -> list[int]:
    ids = set()
    for word in spellings:
        tokens = lm.tokenizer(word, add_special_tokens=False)["input_ids"]
        if tokens:
            ids.add(int(tokens[0]))
    return sorted(ids)


class PTrueScorer:
    """``1 - P(True)`` of a model's answers, higher = more uncertain.

    >>> PTrueScorer(LocalModel.load()).score_batch([("What is H2O?", "Water")])  # doctest: +SKIP
    ([0.31...], 0.05...)
    """

    name = "p_true"

    def __init__(self, lm: LocalModel, batch_size: int = 16) -> None:
        self.lm = lm
        self.batch_size = batch_size
        self.true_ids = _first_tokens(lm, _TRUE)
        self.false_ids = _first_tokens(lm, _FALSE)

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[float], float]:
        """Scores of (question, answer) pairs and the mean seconds per answer."""
        lm = self.lm
        start = time.perf_counter()
        scores: list[float] = []
        for lo in range(0, len(pairs), self.batch_size):
            chunk = pairs[lo:lo + self.batch_size]
            encoded = [lm.prompt_ids([{"role": "user", "content": PTRUE_INSTRUCTION.format(
                question=q, answer=a)}]) for q, a in chunk]
            width = max(map(len, encoded))
            ids = torch.full((len(encoded), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(encoded):
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                out = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                               position_ids=positions.to(lm.device), use_cache=False,
                               logits_to_keep=1)
                probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
            p_true = probs[:, self.true_ids].sum(-1)
            p_false = probs[:, self.false_ids].sum(-1)
            p = p_true / (p_true + p_false).clamp(min=1e-12)
            scores.extend(float(1.0 - x) for x in p)
        return scores, (time.perf_counter() - start) / max(len(pairs), 1)
