"""A naive SemGrad: full autograd through the unmodified model, straight from method.md."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def naive_scores(model: torch.nn.Module, prompt: Sequence[int], response: Sequence[int],
                 offset: int, layers: Sequence[int]) -> dict[str, float]:
    ids = torch.tensor([list(prompt) + list(response)])
    n, t = len(prompt), len(response)
    for p in model.parameters():
        p.requires_grad_(True)
    out = model(input_ids=ids, output_hidden_states=True)
    logits = out.logits[0, n - 1 : n + t - 1].float()
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1).detach()
    tok = logp[torch.arange(t), torch.tensor(list(response))]
    objective = -(entropy * tok).mean()
    hidden = [out.hidden_states[layer] for layer in layers]
    head = model.get_output_embeddings().weight
    grads = torch.autograd.grad(objective, [*hidden, head])
    a = n + offset
    semgrad = torch.stack([g[0, a].abs().mean() for g in grads[:-1]]).mean()
    pg = grads[-1].abs().mean()
    alpha = torch.exp(-entropy.mean())
    model.zero_grad(set_to_none=True)
    return {"semgrad": float(semgrad), "pg": float(pg), "alpha": float(alpha),
            "hybridgrad": float(alpha * pg + (1 - alpha) * semgrad),
            "nll": float(-tok.detach().sum()), "mean_entropy": float(entropy.mean()),
            "max_prob": float(1 - logp.detach().exp().max(-1).values.mean())}
