"""Autoencoders for the reconstruction task, trained through ssl_fast's fused losses.

Two bodies, `Autoencoder` (MLP) and `ConvAutoencoder`, and three variants that wrap either
body: `SparseAutoencoder` (L1 or KL penalty on the latent, or a TopK latent),
`DenoisingAutoencoder` (reconstructs clean inputs from corrupted ones) and `VAE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..ops.regression import binary_cross_entropy_with_logits, mse_loss


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
    [B, widths[0]]; the reconstruction has the input's shape. The latent is linear (no
    activation after the last encoder layer).
    """

    def __init__(self, widths: Sequence[int] = (784, 512, 256, 128), sigmoid_output: bool = True):
        super().__init__()
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"Autoencoder: widths needs at least 2 positive sizes, got {tuple(widths)}")
        self.widths = tuple(widths)
        self.sigmoid_output = sigmoid_output
        self.encoder = _mlp(self.widths, None)
        self.decoder = _mlp(self.widths[::-1], nn.Sigmoid() if sigmoid_output else None)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [B, widths[-1]]: the last encoder layer's output (here the latent)."""
        if x[0].numel() != self.widths[0]:
            raise ValueError(
                f"Autoencoder: expects {self.widths[0]} features per sample, got shape {tuple(x.shape)}"
            )
        return self.encoder(x.flatten(1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [B, widths[-1]] latent features."""
        return self.pre_activation(x)

    def decode(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Latent [B, widths[-1]] -> output of the shape of `like` (the input)."""
        return self.decoder(z).view(like.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error (the fused ssl_fast.mse_loss)."""
        return mse_loss(self(x), x)


class ConvAutoencoder(nn.Module):
    """Small convolutional autoencoder for [B, C, H, W] images with H and W divisible by 4
    (8x8 digits, 28x28 MNIST, 32x32 CIFAR): two stride-2 convolutions down (the latent is
    the ReLU of the second), two transposed convolutions up, a Sigmoid output for inputs in
    [0, 1]."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64), sigmoid_output: bool = True):
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"ConvAutoencoder: channels must be two sizes, got {tuple(channels)}")
        c1, c2 = channels
        self.sigmoid_output = sigmoid_output
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
        )
        decoder: list[nn.Module] = [
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, in_channels, 3, stride=2, padding=1, output_padding=1),
        ]
        if sigmoid_output:
            decoder.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*decoder)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, channels[1], H/4, W/4], before the latent's ReLU."""
        if x.dim() != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(
                f"ConvAutoencoder: expects [B, C, H, W] with H and W divisible by 4, got {tuple(x.shape)}"
            )
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, channels[1], H/4, W/4] feature maps."""
        return torch.relu(self.pre_activation(x))

    def decode(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Feature maps [B, channels[1], H/4, W/4] -> [B, C, H, W]."""
        return self.decoder(z).view(like.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return mse_loss(self(x), x)


Body = Autoencoder | ConvAutoencoder


def _check_body(name: str, body: nn.Module) -> None:
    if not isinstance(body, (Autoencoder, ConvAutoencoder)):
        raise TypeError(
            f"{name}: body must be an Autoencoder or a ConvAutoencoder, got {type(body).__name__}"
        )


# ---------------------------------------------------------------------------- sparse


def _check_k(k: int, units: int) -> None:
    if k > units:
        raise ValueError(f"SparseAutoencoder: k={k} exceeds the latent's {units} units")


class SparseAutoencoder(nn.Module):
    """A body whose latent is pushed towards few active units.

    The latent is ReLU(pre-activation) (penalty "l1" or None) or its sigmoid (penalty
    "kl"); with `k`, only the k largest activations of each sample are kept and the rest
    are zeroed (TopK; the gradient flows through the kept ones). The loss is the fused MSE
    of the reconstruction plus `sparsity` times the penalty:

    - "l1": the latent's L1 norm per sample (sum over units), mean over the batch;
    - "kl": sum over units j of KL(rho || rho_hat_j), rho_hat_j the unit's mean activation
      over the batch, i.e. rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat));
    - None: no penalty (with k, the TopK autoencoder of today's large sparse autoencoders).

    A unit counts as active (`active`) above 0 for ReLU latents, above 0.5 for sigmoid ones.
    """

    def __init__(
        self, body: Body | None = None, penalty: str | None = "l1", sparsity: float = 1e-3,
        rho: float = 0.05, k: int | None = None,
    ):
        super().__init__()
        body = Autoencoder() if body is None else body
        _check_body("SparseAutoencoder", body)
        if penalty not in ("l1", "kl", None):
            raise ValueError(f"SparseAutoencoder: penalty must be 'l1', 'kl' or None, got {penalty!r}")
        if not 0 < rho < 1:
            raise ValueError(f"SparseAutoencoder: rho must be in (0, 1), got {rho}")
        if sparsity < 0:
            raise ValueError(f"SparseAutoencoder: sparsity must be >= 0, got {sparsity}")
        if k is not None and k < 1:
            raise ValueError(f"SparseAutoencoder: k must be a positive number of units, got {k}")
        if k is not None and penalty == "kl":
            raise ValueError(
                "SparseAutoencoder: k (TopK) zeroes units, which a sigmoid latent ('kl') never is"
            )
        if k is not None and isinstance(body, Autoencoder):  # a conv latent's size follows the image's
            _check_k(k, body.widths[-1])
        self.body, self.penalty, self.sparsity, self.rho, self.k = body, penalty, sparsity, rho, k

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse latent, of the body's latent shape."""
        pre = self.body.pre_activation(x)
        if self.penalty == "kl":
            return torch.sigmoid(pre)
        if self.k is None:
            return torch.relu(pre)
        flat = pre.flatten(1)
        _check_k(self.k, flat.shape[1])
        values, index = flat.topk(self.k, dim=1)
        return torch.zeros_like(flat).scatter(1, index, torch.relu(values)).view_as(pre)

    @property
    def threshold(self) -> float:
        return 0.5 if self.penalty == "kl" else 0.0

    def active(self, z: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the active units of a latent from encode()."""
        return z > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.decode(self.encode(x), x)

    def penalty_of(self, z: torch.Tensor) -> torch.Tensor:
        """The sparsity penalty of a batch of latents (0 for penalty None)."""
        z = z.flatten(1)
        if self.penalty == "l1":
            return z.abs().sum(1).mean()
        if self.penalty == "kl":
            rho_hat = z.mean(0).clamp(1e-6, 1 - 1e-6)
            rho = self.rho
            return (rho * (rho / rho_hat).log() + (1 - rho) * ((1 - rho) / (1 - rho_hat)).log()).sum()
        return z.new_zeros(())

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        reconstruction = mse_loss(self.body.decode(z, x), x)
        if self.penalty is None or self.sparsity == 0:
            return reconstruction
        return reconstruction + self.sparsity * self.penalty_of(z)


# ---------------------------------------------------------------------------- denoising

CORRUPTIONS = ("gaussian", "mask", "salt_and_pepper")


def corrupt(
    x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x corrupted, drawn on x's device (from `generator`, else that device's global stream):

    - "gaussian": x + level * N(0, 1) noise;
    - "mask": each element zeroed with probability `level`;
    - "salt_and_pepper": each element set, with probability `level`, to 0 or 1 (even odds).
    """
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    draw = torch.rand(x.shape, generator=generator, device=x.device)
    if kind == "mask":
        return x.masked_fill(draw < level, 0.0)
    if kind == "salt_and_pepper":
        hit = draw < level
        salt = draw < level / 2  # half of the hits: uniform draws below level are even on [0, level)
        return torch.where(hit, salt.to(x.dtype), x)
    raise ValueError(f"corrupt: kind must be one of {', '.join(CORRUPTIONS)}, got {kind!r}")


class DenoisingAutoencoder(nn.Module):
    """A body trained to reconstruct each clean input from a corrupted copy (see `corrupt`):
    loss(x) is the fused MSE of body(corrupt(x)) against x. Only loss() corrupts; encode()
    and forward() see the input as given."""

    def __init__(self, body: Body | None = None, corruption: str = "gaussian", noise: float = 0.3):
        super().__init__()
        body = Autoencoder() if body is None else body
        _check_body("DenoisingAutoencoder", body)
        if corruption not in CORRUPTIONS:
            raise ValueError(
                f"DenoisingAutoencoder: corruption must be one of {', '.join(CORRUPTIONS)}, "
                f"got {corruption!r}"
            )
        if noise < 0 or (corruption != "gaussian" and noise > 1):
            raise ValueError(f"DenoisingAutoencoder: noise {noise} is not a {corruption} level")
        self.body, self.corruption, self.noise = body, corruption, noise

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return corrupt(x, self.corruption, self.noise, generator)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.encode(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return mse_loss(self.body(self.corrupt(x, generator)), x)


# ---------------------------------------------------------------------------- variational


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample [B], summed over the latent (nats)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


class VAE(nn.Module):
    """Variational autoencoder on a body: two heads on the ReLU of the body's latent give
    the mean and log-variance of a Gaussian posterior (Linear heads on an MLP latent, 1x1
    convolutions on feature maps); z = mu + exp(logvar / 2) * eps; the body's decoder maps z
    to the likelihood's parameters.

    likelihood "bernoulli" (for data in [0, 1]): the decoder's outputs are logits, so the
    body needs sigmoid_output=False; "gaussian": the decoder's outputs are means of
    N(mean, sigma^2) per pixel (reconstruction nats: squared error / (2 sigma^2) plus the
    normaliser). loss(x) is the negative ELBO per image in nats, reconstruction + beta * KL
    (sum over pixels and latent units, mean over the batch), with beta ramped linearly from
    0 over the first `beta_warmup_steps` training calls of loss() (a counter in the state
    dict, so a checkpoint resumes the ramp). encode(x) is the posterior mean.
    """

    def __init__(
        self, body: Body | None = None, likelihood: str = "bernoulli", beta: float = 1.0,
        beta_warmup_steps: int = 0, sigma: float = 0.1,
    ):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"VAE: likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        body = Autoencoder(sigmoid_output=likelihood == "gaussian") if body is None else body
        _check_body("VAE", body)
        if likelihood == "bernoulli" and body.sigmoid_output:
            raise ValueError(
                "VAE: a Bernoulli decoder outputs logits; build the body with sigmoid_output=False"
            )
        if beta < 0 or beta_warmup_steps < 0 or sigma <= 0:
            raise ValueError(
                "VAE: needs beta >= 0, beta_warmup_steps >= 0 and sigma > 0, got "
                f"{beta}, {beta_warmup_steps}, {sigma}"
            )
        self.body, self.likelihood, self.beta, self.sigma = body, likelihood, beta, sigma
        self.beta_warmup_steps = beta_warmup_steps
        if isinstance(body, Autoencoder):
            width = body.widths[-1]
            self.mu, self.logvar = nn.Linear(width, width), nn.Linear(width, width)
        else:
            width = body.encoder[-1].out_channels
            self.mu, self.logvar = nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z | x), each of the body's latent shape."""
        h = torch.relu(self.body.pre_activation(x))
        return self.mu(h), self.logvar(h)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps

    def _output(self, decoded: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of x from its posterior mean (probabilities for Bernoulli)."""
        return self._output(self.body.decode(self.encode(x), x))

    def current_beta(self) -> torch.Tensor:
        """beta, times the warm-up's fraction done: min(1, step / beta_warmup_steps)."""
        if self.beta_warmup_steps == 0:
            return torch.tensor(self.beta, device=self.step.device)
        return self.beta * (self.step / self.beta_warmup_steps).clamp(max=1.0)

    def reconstruction_nats(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image, mean over the batch: decoded is the body's output."""
        if self.likelihood == "bernoulli":
            return binary_cross_entropy_with_logits(decoded, x, reduction="sum") / len(x)
        pixels = x[0].numel()
        normaliser = pixels * math.log(self.sigma * math.sqrt(2 * math.pi))
        return mse_loss(decoded, x) * pixels / (2 * self.sigma**2) + normaliser

    def terms(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction nats, KL nats) per image, mean over the batch, of one posterior sample."""
        mu, logvar = self.posterior(x)
        z = self.reparameterize(mu, logvar, generator)
        return self.reconstruction_nats(self.body.decode(z, x), x), gaussian_kl(mu, logvar).mean()

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        reconstruction, kl = self.terms(x, generator)
        beta = self.current_beta()
        if self.training:
            self.step += 1
        return reconstruction + beta * kl

    @torch.no_grad()
    def sample(
        self, n: int, image_shape: Sequence[int] | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images decoded from z ~ N(0, I) (probabilities for Bernoulli). image_shape: the
        shape of one image, e.g. (1, 28, 28); needed by a convolutional body, whose latent
        size follows the image's; an MLP's default is [widths[0]]."""
        device = self.mu.weight.device
        if isinstance(self.body, Autoencoder):
            latent = (self.body.widths[-1],)
            image_shape = tuple(image_shape) if image_shape is not None else (self.body.widths[0],)
        else:
            if image_shape is None:
                raise ValueError("VAE.sample: a convolutional body needs image_shape, e.g. (1, 28, 28)")
            latent = (self.mu.out_channels, image_shape[-2] // 4, image_shape[-1] // 4)
        z = torch.randn((n, *latent), generator=generator, device=device, dtype=self.mu.weight.dtype)
        like = torch.empty((n, *image_shape), device="meta")
        return self._output(self.body.decode(z, like))
