"""Encoder-decoder for time-series prediction: encode the first part of a window, predict
the next segment, trained with the fused smooth-L1 loss."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.regression import smooth_l1_loss


class SeriesForecaster(nn.Module):
    """A GRU encodes the context x [B, L] or [B, L, C]; a linear decoder maps its final state
    to the next `horizon` steps, [B, horizon] or [B, horizon, C]. The GRU's final state is
    the representation (`encode`).

    context: the context length L, for a linear skip path: a linear map of the whole context
    (every lag of every channel) to the horizon, added to the decoder's output and learned
    with it, so the recurrent part models what an autoregression on the lags misses; the
    decoder then starts at zero, so that training starts from the linear model. None: no skip
    path, and any context length.
    center: each window is shifted by the mean of its context (per channel) before the model
    sees it, and the prediction shifted back: the level of a window passes to its forecast
    unchanged, and the model learns only the shape around it.
    """

    def __init__(
        self, horizon: int, channels: int = 1, hidden_size: int = 64, num_layers: int = 2,
        beta: float = 1.0, context: int | None = None, center: bool = False,
    ):
        super().__init__()
        if horizon < 1 or channels < 1 or (context is not None and context < 1):
            raise ValueError(
                f"SeriesForecaster: horizon, channels and context must be >= 1, got {horizon}, {channels} "
                f"and {context}"
            )
        self.horizon, self.channels, self.beta, self.context, self.center = (
            horizon, channels, beta, context, center
        )
        self.encoder = nn.GRU(channels, hidden_size, num_layers=num_layers, batch_first=True)
        self.decoder = nn.Linear(hidden_size, horizon * channels)
        self.skip = None
        if context is not None:
            self.skip = nn.Linear(context * channels, horizon * channels)
            nn.init.zeros_(self.decoder.weight)
            nn.init.zeros_(self.decoder.bias)

    def _as_3d(self, x: torch.Tensor) -> torch.Tensor:
        x3 = x.unsqueeze(-1) if x.dim() == 2 and self.channels == 1 else x
        length = "L" if self.context is None else self.context
        if x3.dim() != 3 or x3.shape[-1] != self.channels or x3.shape[1] != (self.context or x3.shape[1]):
            raise ValueError(
                f"SeriesForecaster: expects [B, {length}] (one channel) or [B, {length}, {self.channels}], "
                f"got {tuple(x.shape)}"
            )
        return x3

    def _centered(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(the context [B, L, C], shifted by its mean when center; the shift [B, 1, C])."""
        x3 = self._as_3d(x)
        if not self.center:
            return x3, 0.0
        level = x3.mean(1, keepdim=True)
        return x3 - level, level

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L(, C)] -> [B, hidden_size]: the last layer's final state."""
        _, state = self.encoder(self._centered(x)[0])
        return state[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x3, level = self._centered(x)
        _, state = self.encoder(x3)
        out = self.decoder(state[-1])
        if self.skip is not None:
            out = out + self.skip(x3.flatten(1))
        out = out.view(len(x), self.horizon, self.channels) + level
        return out.squeeze(-1) if x.dim() == 2 else out

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Smooth-L1 between the prediction from x and the true next segment y."""
        return smooth_l1_loss(self(x), y, beta=self.beta)
