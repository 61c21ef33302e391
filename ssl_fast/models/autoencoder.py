"""Autoencoders for the reconstruction task, trained with the fused MSE loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ops.regression import mse_loss


def _mlp(widths: Sequence[int], last_activation: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    if last_activation is not None:
        layers.append(last_activation)
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """MLP autoencoder: widths[0] inputs down to widths[-1] latent features, and back.

    The default is the classic MNIST one, 784-512-256-128-256-512-784, with a Sigmoid
    output for inputs in [0, 1]. Inputs of any shape [B, ...] are flattened to
    [B, widths[0]]; the reconstruction has the input's shape.
    """

    def __init__(self, widths: Sequence[int] = (784, 512, 256, 128), sigmoid_output: bool = True):
        super().__init__()
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"Autoencoder: widths needs at least 2 positive sizes, got {tuple(widths)}")
        self.widths = tuple(widths)
        self.encoder = _mlp(self.widths, None)
        self.decoder = _mlp(self.widths[::-1], nn.Sigmoid() if sigmoid_output else None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [B, widths[-1]] latent features."""
        if x[0].numel() != self.widths[0]:
            raise ValueError(
                f"Autoencoder: expects {self.widths[0]} features per sample, got shape {tuple(x.shape)}"
            )
        return self.encoder(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x)).view_as(x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error (the fused ssl_fast.mse_loss)."""
        return mse_loss(self(x), x)


class ConvAutoencoder(nn.Module):
    """Small convolutional autoencoder for [B, C, H, W] images with H and W divisible by 4
    (8x8 digits, 28x28 MNIST, 32x32 CIFAR): two stride-2 convolutions down, two transposed
    convolutions up, a Sigmoid output for inputs in [0, 1]."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64), sigmoid_output: bool = True):
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"ConvAutoencoder: channels must be two sizes, got {tuple(channels)}")
        c1, c2 = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        decoder: list[nn.Module] = [
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, in_channels, 3, stride=2, padding=1, output_padding=1),
        ]
        if sigmoid_output:
            decoder.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, channels[1], H/4, W/4] feature maps."""
        if x.dim() != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(
                f"ConvAutoencoder: expects [B, C, H, W] with H and W divisible by 4, got {tuple(x.shape)}"
            )
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return mse_loss(self(x), x)
