"""Batched augmentations for contrastive views (SimCLR): random resized crop and flip as one
affine resampling, brightness and contrast jitter, Gaussian blur and noise, each drawn per
image but computed for the whole batch at once on its device (no per-image Python loop)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ContrastiveAugment(nn.Module):
    """x [B, C, H, W] in [0, 1] -> a random view [B, C, size, size] in [0, 1].

    crop_scale, crop_ratio: area fraction and aspect ratio of the random crop (as
    torchvision's RandomResizedCrop); flip_p: horizontal flip probability; jitter:
    brightness and contrast factors drawn from [1 - jitter, 1 + jitter]; blur_p and
    blur_sigma: Gaussian blur probability and sigma range (in output pixels); noise_std:
    additive Gaussian noise. generator: a torch.Generator on x's device, for reproducible views.
    """

    def __init__(
        self,
        size: int,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: float = 0.4,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        noise_std: float = 0.0,
    ):
        super().__init__()
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1) or not (0 < crop_ratio[0] <= crop_ratio[1]):
            raise ValueError(f"ContrastiveAugment: bad crop_scale {crop_scale} or crop_ratio {crop_ratio}")
        if not (0 <= flip_p <= 1 and 0 <= blur_p <= 1 and 0 <= jitter < 1 and noise_std >= 0):
            raise ValueError(
                "ContrastiveAugment: flip_p and blur_p must lie in [0, 1], jitter in [0, 1), noise_std >= 0"
            )
        self.size, self.crop_scale, self.crop_ratio = size, crop_scale, crop_ratio
        self.flip_p, self.jitter, self.blur_p, self.blur_sigma, self.noise_std = (
            flip_p, jitter, blur_p, blur_sigma, noise_std
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(
                f"ContrastiveAugment: expects float [B, C, H, W], got {x.dtype} {tuple(x.shape)}"
            )
        b = len(x)

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(b, generator=generator, device=x.device) * (high - low) + low

        x = self._crop_and_flip(x, uniform)
        if self.jitter:
            brightness = uniform(1 - self.jitter, 1 + self.jitter).view(b, 1, 1, 1)
            contrast = uniform(1 - self.jitter, 1 + self.jitter).view(b, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x * brightness - mean) * contrast + mean).clamp_(0, 1)
        if self.blur_p:
            x = self._blur(x, uniform)
        if self.noise_std:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (x + noise * self.noise_std).clamp_(0, 1)
        return x

    def _crop_and_flip(self, x: torch.Tensor, uniform) -> torch.Tensor:
        b = len(x)
        area = uniform(*self.crop_scale)
        log_ratio = uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        ratio = log_ratio.exp()
        # Crop width and height as fractions of the image, at most the whole image.
        w = (area * ratio).sqrt().clamp(max=1.0)
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = uniform(0, 1) * (1 - w) * 2 - (1 - w)  # centre in [-1 + w, 1 - w]
        cy = uniform(0, 1) * (1 - h) * 2 - (1 - h)
        flip = torch.where(uniform(0, 1) < self.flip_p, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, [b, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _blur(self, x: torch.Tensor, uniform) -> torch.Tensor:
        b, c, h, w = x.shape
        sigma = uniform(*self.blur_sigma)
        sigma = torch.where(uniform(0, 1) < self.blur_p, sigma, torch.zeros_like(sigma))
        radius = max(1, math.ceil(3 * self.blur_sigma[1]))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        # sigma 0 (no blur) gives the identity kernel.
        kernel = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-6).view(b, 1)) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)
        kernel = kernel.repeat_interleave(c, 0)  # one kernel per image and channel
        flat = x.reshape(1, b * c, h, w)
        pad = (radius, radius, radius, radius)
        flat = F.pad(flat, pad, mode="reflect") if min(h, w) > radius else F.pad(flat, pad, mode="replicate")
        flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
        flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
        return flat.view(b, c, h, w)
