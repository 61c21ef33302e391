"""nn.Module wrappers: each subclasses the torch loss it replaces and keeps its constructor."""

from __future__ import annotations

import torch
from torch import nn

from .ops.regression_loss import mse_loss, smooth_l1_loss


class SmoothL1Loss(nn.SmoothL1Loss):
    """Drop-in for torch.nn.SmoothL1Loss running the fused ssl_fast.smooth_l1_loss.

    forward(input, target, mask=None): mask as in ssl_fast.smooth_l1_loss.
    """

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return smooth_l1_loss(input, target, beta=self.beta, reduction=self.reduction, mask=mask)


class MSELoss(nn.MSELoss):
    """Drop-in for torch.nn.MSELoss running the fused ssl_fast.mse_loss.

    forward(input, target, mask=None): mask as in ssl_fast.mse_loss.
    """

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return mse_loss(input, target, reduction=self.reduction, mask=mask)
