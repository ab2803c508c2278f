"""What one scoring pass measures about each answer, computed from the pass's tensors.

The teacher-forced pass (or a decode loop that keeps the logits it produced) calls:

1. :func:`answer_statistics` on the answer's logits: the objective to differentiate and
   the likelihood statistics;
2. one backward pass of ``objective.sum()`` to the hidden states of the anchor layers;
3. :func:`anchor_gradients` on those gradients: SemGrad and the per-layer norms at
   every eligible anchor offset;
4. :func:`features` for the named features of each answer.

Every gradient here is of the mean-normalised objective ``J = -(1/T) sum_t H_t log p(y_t)``
(method.md); the summed objective ``T * J`` has ``T`` times its gradient, so the
sum-normalised norms are ``answer_tokens`` times the ones reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Named features besides the gradient norms, in the order :func:`features` gives them.
SCALAR_FEATURES = ("semgrad", "semgrad_sum", "objective_mean", "objective_sum", "nll",
                   "nll_per_token", "mean_entropy", "max_entropy", "max_token_nll", "max_prob",
                   "answer_tokens")


def gradient_feature(norm: str, offset: int, layer: int) -> str:
    """The feature name of one anchor-gradient norm: ``grad_l1/-1/15`` is the L1 norm of
    ``dJ/dh`` at prompt offset -1 in hidden-state layer 15."""
    return f"grad_{norm}/{offset}/{layer}"


@dataclass(frozen=True)
class AnswerStatistics:
    """Per-answer statistics of a batch of answers (each a tensor of shape ``[batch]``).

    ``objective`` keeps its graph: it is what the backward pass differentiates. The rest
    are detached. ``max_prob`` is ``1 - mean_t max_v p_t(v)`` and ``max_token_nll`` is
    ``-min_t log p_t(y_t)``: higher is more uncertain for both.
    """

    objective: torch.Tensor
    objective_sum: torch.Tensor
    nll: torch.Tensor
    mean_entropy: torch.Tensor
    max_entropy: torch.Tensor
    max_token_nll: torch.Tensor
    max_prob: torch.Tensor
    tokens: torch.Tensor


def answer_statistics(logits: torch.Tensor, targets: torch.Tensor, answer: torch.Tensor
                      ) -> AnswerStatistics:
    """Statistics of answers from the logits that predicted them.

    ``logits[b, t]`` is the model's prediction of ``targets[b, t]``, the answer's token
    ``t``; ``answer[b, t]`` is true where row ``b`` has a token ``t`` (answers of a batch
    are right-padded: only the answers' positions are computed). The loss is formed in
    float32 whatever the model's dtype.
    """
    rows, columns = answer.nonzero(as_tuple=True)
    logp = torch.log_softmax(logits[rows, columns].float(), dim=-1)  # [answer tokens, V]
    with torch.no_grad():
        probs = logp.exp()
        terms = probs * logp
        # 0 log 0 = 0: a token the model rules out (a -inf logit) adds no entropy.
        terms.masked_fill_(probs == 0, 0.0)
        entropy = -terms.sum(-1)
        del terms
        top_prob = probs.max(-1).values
        del probs
    tok_logp = logp.gather(-1, targets[rows, columns].unsqueeze(-1)).squeeze(-1)
    batch = answer.shape[0]

    def per_row(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(batch).index_add(0, rows, values)

    def row_max(values: torch.Tensor) -> torch.Tensor:
        return values.new_full((batch,), float("-inf")).scatter_reduce(
            0, rows, values, "amax")

    tokens = answer.sum(-1).float()
    objective_sum = -per_row(entropy * tok_logp)
    objective = objective_sum / tokens
    with torch.no_grad():
        token_nll = -tok_logp.detach()
        return AnswerStatistics(
            objective=objective, objective_sum=objective_sum.detach(),
            nll=per_row(token_nll), mean_entropy=per_row(entropy) / tokens,
            max_entropy=row_max(entropy), max_token_nll=row_max(token_nll),
            max_prob=1.0 - per_row(top_prob) / tokens, tokens=tokens)


@dataclass(frozen=True)
class AnchorGradients:
    """SemGrad and the anchor-gradient norms of a batch.

    ``semgrad[b]`` is ``mean |dJ/dh|`` at the configured anchor over its layers;
    ``l1[b, k, s]`` and ``l2[b, k, s]`` are the norms of ``dJ/dh`` at ``offsets[k]`` in
    ``layers[s]``.
    """

    semgrad: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    offsets: tuple[int, ...]
    layers: tuple[int, ...]


def anchor_gradients(grads: Sequence[torch.Tensor], layers: Sequence[int], anchor_column: int,
                     columns: Sequence[int], offsets: Sequence[int]) -> AnchorGradients:
    """Norms of the hidden-state gradients ``grads`` (one ``[batch, column, dim]`` tensor per
    layer of ``layers``) at ``anchor_column`` and at ``columns`` (the column of each of
    ``offsets``), accumulated in float32."""
    at_anchor = torch.stack([g[:, anchor_column].float() for g in grads])  # [S, B, d]
    semgrad = at_anchor.abs().mean(dim=(0, 2))
    index = torch.tensor(list(columns), device=grads[0].device)
    at_offsets = torch.stack([g.index_select(1, index).float() for g in grads], dim=2)
    return AnchorGradients(
        semgrad=semgrad,
        l1=torch.linalg.vector_norm(at_offsets, ord=1, dim=-1),
        l2=torch.linalg.vector_norm(at_offsets, ord=2, dim=-1),
        offsets=tuple(offsets), layers=tuple(layers))


def features(stats: AnswerStatistics, gradients: AnchorGradients,
             prompt_lengths: Sequence[int]) -> list[dict[str, float]]:
    """The named features of every answer of a batch.

    An offset reaching before the start of a row's prompt has no gradient there: its
    norms are left out of that row's features.
    """
    columns = {
        "semgrad": gradients.semgrad, "objective_mean": stats.objective.detach(),
        "objective_sum": stats.objective_sum, "nll": stats.nll,
        "mean_entropy": stats.mean_entropy, "max_entropy": stats.max_entropy,
        "max_token_nll": stats.max_token_nll, "max_prob": stats.max_prob,
        "answer_tokens": stats.tokens}
    values = {name: column.tolist() for name, column in columns.items()}
    l1, l2 = gradients.l1.tolist(), gradients.l2.tolist()
    rows = []
    for b, prompt_length in enumerate(prompt_lengths):
        row = {name: float(values[name][b]) for name in columns}
        tokens = int(row["answer_tokens"])
        row["semgrad_sum"] = row["semgrad"] * tokens
        row["nll_per_token"] = row["nll"] / tokens
        for k, offset in enumerate(gradients.offsets):
            if -offset > prompt_length:
                continue
            for s, layer in enumerate(gradients.layers):
                row[gradient_feature("l1", offset, layer)] = l1[b][k][s]
                row[gradient_feature("l2", offset, layer)] = l2[b][k][s]
        rows.append({name: row[name] for name in (*SCALAR_FEATURES, *sorted(
            set(row) - set(SCALAR_FEATURES), key=_gradient_order))})
    return rows


def _gradient_order(name: str) -> tuple[str, int, int]:
    norm, offset, layer = name.split("/")
    return norm, -int(offset), int(layer)
