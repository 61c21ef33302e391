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
