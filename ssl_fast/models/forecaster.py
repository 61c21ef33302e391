"""Encoder-decoder for time-series prediction: encode the first part of a window, predict
the next segment, trained with the fused smooth-L1 loss."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.regression import smooth_l1_loss


class SeriesForecaster(nn.Module):
    """A GRU encodes the context x [B, L] or [B, L, C]; a linear decoder maps its final state
    to the next `horizon` steps, [B, horizon] or [B, horizon, C]. The GRU's final state is
    the representation (`encode`)."""

    def __init__(
        self, horizon: int, channels: int = 1, hidden_size: int = 64, num_layers: int = 2,
        beta: float = 1.0,
    ):
        super().__init__()
        if horizon < 1 or channels < 1:
            raise ValueError(
                f"SeriesForecaster: horizon and channels must be >= 1, got {horizon} and {channels}"
            )
        self.horizon, self.channels, self.beta = horizon, channels, beta
        self.encoder = nn.GRU(channels, hidden_size, num_layers=num_layers, batch_first=True)
        self.decoder = nn.Linear(hidden_size, horizon * channels)

    def _as_3d(self, x: torch.Tensor) -> torch.Tensor:
        x3 = x.unsqueeze(-1) if x.dim() == 2 and self.channels == 1 else x
        if x3.dim() != 3 or x3.shape[-1] != self.channels:
            raise ValueError(
                f"SeriesForecaster: expects [B, L] (one channel) or [B, L, {self.channels}], "
                f"got {tuple(x.shape)}"
            )
        return x3

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L(, C)] -> [B, hidden_size]: the last layer's final state."""
        _, state = self.encoder(self._as_3d(x))
        return state[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encode(x)).view(len(x), self.horizon, self.channels)
        return out.squeeze(-1) if x.dim() == 2 else out

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Smooth-L1 between the prediction from x and the true next segment y."""
        return smooth_l1_loss(self(x), y, beta=self.beta)
