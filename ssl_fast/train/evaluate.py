"""How good a learned representation or predictor is, each number beside a baseline:
weighted kNN and linear-probe accuracy of features, reconstruction MSE with a picture (and
the autoencoder variants' own measures: sparsity, negative ELBO, denoising error),
masked-token accuracy and perplexity against unigram statistics, and forecast errors
against the last value and a ridge regression on the lags."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def knn_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    k: int = 20, temperature: float = 0.07,
) -> float:
    """Top-1 accuracy of a weighted k-nearest-neighbour vote on cosine similarity: each of
    the k most similar training samples votes for its label with weight exp(sim / t) (the
    protocol of instance-discrimination papers and DINO)."""
    train_n = nn.functional.normalize(train_x.double().flatten(1), dim=1)
    test_n = nn.functional.normalize(test_x.double().flatten(1), dim=1)
    sim, idx = (test_n @ train_n.T).topk(min(k, len(train_n)), dim=1)
    classes = int(max(train_y.max(), test_y.max())) + 1
    votes = torch.zeros(len(test_n), classes, dtype=torch.float64)
    votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
    return (votes.argmax(1) == test_y).double().mean().item()


def linear_probe_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
) -> float:
    """Test accuracy of a logistic regression fit on standardised training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    probe.fit(train_x.flatten(1).double().numpy(), train_y.numpy())
    return float(probe.score(test_x.flatten(1).double().numpy(), test_y.numpy()))


@torch.no_grad()
def features(encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
             batch_size: int = 1024) -> torch.Tensor:
    """encode(x), batch by batch on `device`, as float32 [N, F] on the CPU."""
    return torch.cat([encode(part.to(device)).flatten(1).float().cpu() for part in x.split(batch_size)])


def representation_table(
    encoders: dict[str, Callable | None], x: torch.Tensor, y: torch.Tensor,
    train: torch.Tensor, test: torch.Tensor, device: torch.device,
) -> dict[str, dict[str, float]]:
    """kNN and linear-probe accuracy on the test split for each named encoder (None: the
    raw inputs). Encoders run under no_grad; put modules in eval mode first."""
    table = {}
    for name, encode in encoders.items():
        feats = x.flatten(1) if encode is None else features(encode, x, device)
        split = (feats[train], y[train], feats[test], y[test])
        table[name] = {"knn_top1": knn_accuracy(*split), "linear_probe": linear_probe_accuracy(*split)}
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """The table as aligned text: one row per entry, one column per metric (blank where a
    row lacks it), each column with one number of decimals, enough for 4 significant
    digits of its largest value."""
    metrics = list(dict.fromkeys(m for row in table.values() for m in row))
    columns = [_column([row.get(m) for row in table.values()]) for m in metrics]
    widths = [max(len(m), *(len(cell) for cell in cells)) for m, cells in zip(metrics, columns, strict=True)]
    name_width = max([len(name) for name in table] + [4])
    lines = [" " * name_width + "".join(f"  {m:>{w}}" for m, w in zip(metrics, widths, strict=True))]
    for i, name in enumerate(table):
        cells = "".join(f"  {cells[i]:>{w}}" for cells, w in zip(columns, widths, strict=True))
        lines.append(f"{name:<{name_width}}{cells}".rstrip())
    return "\n".join(lines)


def _column(values: list[float | None], digits: int = 4) -> list[str]:
    """The cells of one column: a shared number of decimals that gives its largest finite
    value `digits` significant digits; "" for a missing value."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    decimals = digits - 1 - math.floor(math.log10(largest)) if largest > 0 else digits - 1
    decimals = min(max(decimals, 0), 12)
    return ["" if v is None else f"{v:.{decimals}f}" for v in values]


ROW_LABELS = ("original", "reconstruction", "samples")
LABEL_HEIGHT = 14  # pixels of the strip above each row that names it


def save_reconstructions(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: Path, samples: torch.Tensor | None = None
) -> Path | None:
    """A PNG grid: the originals [B, 1 or 3, H, W] in [0, 1] on the top row, their
    reconstructions below, then (when given) generated samples [S, C, H, W] on a third row,
    each row under a label that names it, each image scaled up to at least 64 pixels.
    Needs Pillow; returns None without it."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return None
    rows = [originals, reconstructions.reshape(originals.shape)]
    if samples is not None:
        rows.append(samples.reshape(-1, *originals.shape[1:]))
    _, c, h, w = originals.shape
    columns = max(len(row) for row in rows)
    zoom = max(1, -(-64 // h))
    pad = 2
    row_height = LABEL_HEIGHT + h * zoom + pad
    grid = torch.ones(c, len(rows) * row_height + pad, columns * (w * zoom + pad) + pad)
    for r, row in enumerate(rows):
        for i, image in enumerate(row.clamp(0, 1)):
            tile = image.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2)
            top, left = pad + r * row_height + LABEL_HEIGHT, pad + i * (w * zoom + pad)
            grid[:, top:top + h * zoom, left:left + w * zoom] = tile
    pixels = (grid * 255).round().byte().permute(1, 2, 0).squeeze(-1).numpy()
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for r, label in enumerate(ROW_LABELS[:len(rows)]):
        draw.text((pad + 2, pad + r * row_height), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# ---------------------------------------------------------------- the autoencoder variants


@torch.no_grad()
def reconstruct(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """model(x) batch by batch on `device`, as float32 on the CPU (put the model in eval mode)."""
    return torch.cat([model(part.to(device)).float().cpu() for part in x.split(batch_size)])


@torch.no_grad()
def negative_elbo(vae: nn.Module, x: torch.Tensor, device: torch.device, samples: int = 4,
                  seed: int = 0, batch_size: int = 1024) -> float:
    """The VAE's negative ELBO (beta = 1) in nats per image, averaged over `samples`
    posterior draws per image from a generator seeded with `seed` on `device`."""
    generator = torch.Generator(device).manual_seed(seed)
    total = 0.0
    for part in x.split(batch_size):
        part = part.to(device)
        for _ in range(samples):
            reconstruction, kl = vae.terms(part, generator)
            total += (reconstruction + kl).item() * len(part)
    return total / (samples * len(x))


def variant_metrics(
    table: dict[str, dict[str, float]], model: nn.Module, untrained: nn.Module, held_out: torch.Tensor,
    device: torch.device, seed: int = 0,
) -> None:
    """Adds the metrics of the autoencoder's variant to the task's table (rows "trained
    encoder", "random-init encoder", "mean image"):

    - SparseAutoencoder: active_fraction, the mean fraction of active latent units;
    - VAE: neg_elbo_nats, the held-out negative ELBO per image (4 seeded draws);
    - DenoisingAutoencoder: denoised_mse, the error against the clean images of the model
      given corrupted held-out images (seeded), beside the corrupted images themselves
      taken as the reconstruction (the identity) and the mean image.
    """
    from ..models import VAE, DenoisingAutoencoder, SparseAutoencoder

    rows = {"trained encoder": model, "random-init encoder": untrained}
    for name, net in rows.items():
        row = table.setdefault(name, {})
        if isinstance(net, SparseAutoencoder):
            latent = features(net.encode, held_out, device)
            row["active_fraction"] = net.active(latent).double().mean().item()
        if isinstance(net, VAE):
            row["neg_elbo_nats"] = negative_elbo(net, held_out, device, seed=seed)
    if isinstance(model, DenoisingAutoencoder):
        corrupted = model.corrupt(held_out, torch.Generator().manual_seed(seed))
        denoised = reconstruct(model, corrupted, device)
        table["trained encoder"]["denoised_mse"] = torch.mean((denoised - held_out) ** 2).item()
        table["corrupted input"] = {"denoised_mse": torch.mean((corrupted - held_out) ** 2).item()}
        table["mean image"]["denoised_mse"] = table["mean image"]["reconstruction_mse"]


def token_metrics(logits: torch.Tensor, labels: torch.Tensor, train_counts: torch.Tensor) -> dict[str, float]:
    """Masked-token accuracy and perplexity of logits [M, V] for labels [M], beside a
    unigram model of the training labels (add-one smoothed): its accuracy (always the most
    frequent token) and its perplexity."""
    nll = nn.functional.cross_entropy(logits.double(), labels)
    unigram = (train_counts.double() + 1).log() - (train_counts.double() + 1).sum().log()
    return {
        "masked_token_accuracy": (logits.argmax(-1) == labels).double().mean().item(),
        "perplexity": nll.exp().item(),
        "unigram_accuracy": (labels == train_counts.argmax()).double().mean().item(),
        "unigram_perplexity": (-unigram[labels].mean()).exp().item(),
    }


def forecast_metrics(
    predicted: torch.Tensor, target: torch.Tensor, context: torch.Tensor,
    train_context: torch.Tensor, train_target: torch.Tensor,
) -> dict[str, dict[str, float]]:
    """MSE and MAE of predicted [N, H] against target [N, H], beside two baselines fit on
    the training windows: the last value of the context repeated, and a ridge regression
    of the horizon on the context (all in the units of the inputs)."""
    from sklearn.linear_model import RidgeCV

    ridge = RidgeCV(alphas=(1e-3, 1e-2, 1e-1, 1, 10, 100)).fit(
        train_context.flatten(1).double().numpy(), train_target.flatten(1).double().numpy()
    )
    baselines = {
        "model": predicted,
        "last_value": context[:, -1:].expand_as(target),
        "ridge_on_lags": torch.from_numpy(ridge.predict(context.flatten(1).double().numpy())),
    }
    return {
        name: {"mse": ((p.double() - target.double()) ** 2).mean().item(),
               "mae": (p.double() - target.double()).abs().mean().item()}
        for name, p in baselines.items()
    }
