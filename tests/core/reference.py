"""A naive SemGrad: full autograd through the unmodified model, straight from method.md."""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: How far a score may move when the scoring pass starts at an earlier column (the
#: earliest feature offset instead of the anchor): its kernels then see more rows and round
#: float32 differently. Measured: up to 4.7e-7 relative on the tiny models and 5.6e-6 on
#: the default model; an anchor one column off moves scores by over 50%.
ROUNDING = 2e-5


def largest_relative_change(before: dict[str, float], after: dict[str, float]) -> float:
    """The largest relative change of any of ``before``'s values in ``after``."""
    return max(abs(after[k] - v) / max(abs(v), 1e-30) for k, v in before.items())


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


def naive_features(model: torch.nn.Module, prompt: Sequence[int], response: Sequence[int],
                   anchor: int, offsets: Sequence[int], layers: Sequence[int]
                   ) -> dict[str, float]:
    """Every named feature of one answer, one quantity at a time: a separate backward
    pass for each objective, offset and layer. Entropy uses 0 log 0 = 0."""
    ids = torch.tensor([list(prompt) + list(response)])
    n, t = len(prompt), len(response)
    targets = torch.tensor(list(response))
    out = model(input_ids=ids, output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0, n - 1 : n + t - 1].float(), -1)
    entropy = torch.special.entr(logp.exp()).sum(-1).detach()
    tok = logp[torch.arange(t), targets]
    summed = -(entropy * tok).sum()
    mean = summed / t
    features = {"objective_mean": mean.item(), "objective_sum": summed.item(),
                "nll": -tok.sum().item(), "nll_per_token": -tok.mean().item(),
                "mean_entropy": entropy.mean().item(), "max_entropy": entropy.max().item(),
                "max_token_nll": -tok.min().item(),
                "max_prob": 1 - logp.exp().max(-1).values.mean().item(),
                "answer_tokens": float(t)}
    for name, objective in (("semgrad", mean), ("semgrad_sum", summed)):
        at_anchor = [torch.autograd.grad(objective, out.hidden_states[layer],
                                         retain_graph=True)[0][0, n + anchor]
                     for layer in layers]
        features[name] = float(torch.stack([g.abs().mean() for g in at_anchor]).mean())
    for offset in offsets:
        for layer in layers:
            (g,) = torch.autograd.grad(mean, out.hidden_states[layer], retain_graph=True)
            features[f"grad_l1/{offset}/{layer}"] = float(g[0, n + offset].abs().sum())
            features[f"grad_l2/{offset}/{layer}"] = float(g[0, n + offset].pow(2).sum().sqrt())
    return features
