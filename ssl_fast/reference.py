"""Pure-PyTorch references: the fallback where no kernel serves a tensor, and the test oracle.

Each function has the semantics of its fused counterpart in ssl_fast.ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_reduce(loss: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Reduce an elementwise loss. With a mask over the leading dims of `loss`, the loss
    is averaged over the trailing dims, weighted by the mask, then summed ('sum'),
    divided by the mask's sum ('mean'), or returned per position ('none')."""
    if mask is None:
        if reduction == "none":
            return loss
        return loss.sum() if reduction == "sum" else loss.mean()
    per_position = loss.flatten(mask.dim()).mean(-1) if loss.dim() > mask.dim() else loss
    weight = mask.detach().to(per_position.dtype)
    weighted = per_position * weight
    if reduction == "none":
        return weighted
    return weighted.sum() if reduction == "sum" else weighted.sum() / weight.sum()


def smooth_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    input, target = torch.broadcast_tensors(input, target)
    if mask is None:
        return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)
    return masked_reduce(F.smooth_l1_loss(input, target, reduction="none", beta=beta), mask, reduction)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    input, target = torch.broadcast_tensors(input, target)
    if mask is None:
        return F.mse_loss(input, target, reduction=reduction)
    return masked_reduce(F.mse_loss(input, target, reduction="none"), mask, reduction)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def contrastive_lse(
    q: torch.Tensor,
    k: torch.Tensor | None,
    scale: torch.Tensor,
    exclude: torch.Tensor | None,
    col_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ssl_fast::contrastive_lse through the full logits matrix: (qn, kn, row_lse, col_lse)."""
    acc = _accumulate_dtype(q.dtype)
    qn = F.normalize(q.to(acc), dim=1)
    kn = qn.new_empty(0) if k is None else F.normalize(k.to(acc), dim=1)
    logits = (qn @ (qn if k is None else kn).T) * scale.to(device=q.device, dtype=acc)
    if k is None:
        excluded = torch.eye(len(q), dtype=torch.bool, device=q.device)
    elif exclude is not None:
        excluded = torch.zeros(logits.shape, dtype=torch.bool, device=q.device)
        rows = torch.nonzero(exclude >= 0).squeeze(1)
        excluded[rows, exclude[rows]] = True
    else:
        excluded = None
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    row = torch.logsumexp(logits, 1)
    col = torch.logsumexp(logits, 0) if col_lse and k is not None else qn.new_empty(0)
    return qn, kn, row, col


def nt_xent(
    z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.5, reduction: str = "mean"
) -> torch.Tensor:
    """The materialised NT-Xent formula: all 2N x 2N cosine similarities, the diagonal masked,
    cross-entropy against each row's positive (the other view of the same sample)."""
    n = len(z0)
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, labels, reduction=reduction)


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.07,
    labels: torch.Tensor | None = None,
    symmetric: bool = False,
    logit_scale: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The materialised InfoNCE / CLIP formula: cross-entropy of the query x key cosine
    logits against `labels`; symmetric also lets each positive key pick its query."""
    scale = logit_scale.exp() if logit_scale is not None else 1.0 / temperature
    logits = (F.normalize(query, dim=1) @ F.normalize(key, dim=1).T) * scale
    if labels is None:
        labels = torch.arange(len(query), device=query.device)
    loss = F.cross_entropy(logits, labels, reduction="none")
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T[labels], torch.arange(len(query), device=query.device),
                                       reduction="none")) / 2
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
