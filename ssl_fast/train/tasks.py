"""The four pretext tasks end to end on the offline default data: a model, its training
set, and an evaluation of what it learned against a baseline, for `python -m ssl_fast
train TASK` and `make demo`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset


@dataclass
class Task:
    model: nn.Module
    dataset: Dataset
    evaluate: Callable[[nn.Module], dict]  # metrics of the trained model, with a baseline
    collate_fn: Callable | None = None
    lr: float = 1e-3  # the default learning rate of the task


def _split(n: int, seed: int, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(n * (1 - test_fraction))
    return order[:cut], order[cut:]


def autoencoder(seed: int) -> Task:
    from ..data import load_images
    from ..models import Autoencoder

    images, _ = load_images("digits")
    train, test = _split(len(images), seed)
    model = Autoencoder((64, 48, 32, 16))

    def evaluate(model: nn.Module) -> dict:
        with torch.no_grad():
            mse = torch.mean((model.eval()(images[test]) - images[test]) ** 2).item()
        baseline = torch.mean((images[train].mean(0) - images[test]) ** 2).item()
        return {"test_mse": mse, "mean_image_mse": baseline}

    return Task(model, TensorDataset(images[train]), evaluate, lr=3e-3)


class _AugmentedSimCLR(nn.Module):
    """SimCLR whose loss draws two augmented views of each image of the batch."""

    def __init__(self, simclr: nn.Module, augment: nn.Module):
        super().__init__()
        self.simclr, self.augment = simclr, augment

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.simclr.loss(self.augment(x), self.augment(x))

    def backward_chunked(self, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
        return self.simclr.backward_chunked(self.augment(x), self.augment(x), chunk_size)


def _linear_probe(features_train, labels_train, features_test, labels_test) -> float:
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000).fit(features_train.numpy(), labels_train.numpy())
    return float(probe.score(features_test.numpy(), labels_test.numpy()))


def simclr(seed: int) -> Task:
    from ..data import ContrastiveAugment, load_images
    from ..models import SimCLR

    images, labels = load_images("digits")
    train, test = _split(len(images), seed)

    def backbone() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())

    torch.manual_seed(seed)
    untrained = backbone()
    model = _AugmentedSimCLR(SimCLR(backbone(), 128, 256, 64, temperature=0.5),
                             ContrastiveAugment(8, crop_scale=(0.5, 1.0), flip_p=0.0, noise_std=0.05))

    def evaluate(model: nn.Module) -> dict:
        def probe(encoder: nn.Module) -> float:
            with torch.no_grad():
                feats = encoder.eval()(images)
            return _linear_probe(feats[train], labels[train], feats[test], labels[test])

        return {
            "linear_probe_accuracy": probe(model.simclr.backbone),
            "random_encoder_accuracy": probe(untrained),
        }

    return Task(model, TensorDataset(images[train]), evaluate)


def forecast(seed: int) -> Task:
    from ..data import load_series, make_windows
    from ..models import SeriesForecaster

    context, horizon = 24, 6
    splits = make_windows(load_series(), context, horizon)
    torch.manual_seed(seed)
    model = SeriesForecaster(horizon, hidden_size=32)

    def evaluate(model: nn.Module) -> dict:
        x, y = splits.test.x, splits.unscale(splits.test.y)
        with torch.no_grad():
            mae = (splits.unscale(model.eval()(x)) - y).abs().mean().item()
        persistence = (splits.unscale(x[:, -1:]) - y).abs().mean().item()  # repeat the last value
        return {"test_mae": mae, "persistence_mae": persistence}

    return Task(model, TensorDataset(splits.train.x, splits.train.y), evaluate)


def mlm(seed: int) -> Task:
    from ..collate import MLMCollator
    from ..data import WordPieceTokenizer, load_corpus, token_sequences
    from ..models import MaskedLanguageModel

    corpus = load_corpus()
    tokenizer = WordPieceTokenizer.train(corpus, vocab_size=4000)
    sequences = token_sequences(corpus, tokenizer, max_length=64)
    train, test = _split(len(sequences), seed, test_fraction=0.1)
    collator = MLMCollator(tokenizer, seed=seed)

    def collate(examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = collator(examples)
        ids = batch["input_ids"]
        return ids, batch["labels"], batch.get("attention_mask", (ids != tokenizer.pad_token_id).long())

    torch.manual_seed(seed)
    model = MaskedLanguageModel(len(tokenizer), dim=128, layers=2, heads=4, max_length=64)

    def evaluate(model: nn.Module) -> dict:
        ids, labels, attention = collate([sequences[i] for i in test[:256].tolist()])
        masked = labels != -100
        with torch.no_grad():  # logits of the masked positions only
            hidden = model.eval()(ids, attention)[masked]
            predicted = (hidden @ model.tokens.weight.T + model.head_bias).argmax(-1)
        counts = torch.bincount(labels[masked], minlength=len(tokenizer))
        return {
            "masked_token_accuracy": (predicted == labels[masked]).float().mean().item(),
            "most_frequent_token_accuracy": (counts.max() / masked.sum()).item(),
        }

    return Task(model, [sequences[i] for i in train.tolist()], evaluate, collate)


TASKS: dict[str, Callable[[int], Task]] = {
    "autoencoder": autoencoder, "simclr": simclr, "mlm": mlm, "forecast": forecast,
}
