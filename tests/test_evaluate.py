"""The evaluation protocols: weighted kNN, linear probe, token and forecast metrics, the table."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ssl_fast.train.evaluate import (
    LABEL_HEIGHT,
    forecast_metrics,
    format_table,
    knn_accuracy,
    linear_probe_accuracy,
    save_reconstructions,
    token_metrics,
)


def test_knn_matches_a_direct_vote():
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(60, 5, generator=gen), torch.randn(25, 5, generator=gen)
    train_y, test_y = torch.randint(0, 3, (60,), generator=gen), torch.randint(0, 3, (25,), generator=gen)
    k, t = 7, 0.1
    correct = 0
    for x, y in zip(test_x, test_y, strict=True):
        sims = torch.nn.functional.cosine_similarity(x[None].double(), train_x.double())
        votes = [0.0] * 3
        for i in sims.argsort(descending=True)[:k].tolist():
            votes[train_y[i]] += math.exp(sims[i].item() / t)
        correct += max(range(3), key=votes.__getitem__) == y.item()
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=t) == pytest.approx(correct / 25)


def test_separable_classes_are_found():
    pytest.importorskip("sklearn")
    gen = torch.Generator().manual_seed(1)
    centres = torch.eye(4) * 10
    y = torch.arange(4).repeat(30)
    x = centres[y] + torch.randn(120, 4, generator=gen)
    assert knn_accuracy(x[:80], y[:80], x[80:], y[80:]) == 1.0
    assert linear_probe_accuracy(x[:80], y[:80], x[80:], y[80:]) == 1.0


def test_token_metrics():
    vocab = 10
    labels = torch.tensor([1, 2, 2, 3])
    counts = torch.tensor([0, 5, 9, 3, 0, 0, 0, 0, 0, 0])
    m = token_metrics(torch.zeros(4, vocab), labels, counts)  # uniform logits
    assert m["perplexity"] == pytest.approx(vocab)
    assert m["unigram_accuracy"] == 0.5  # always token 2
    probs = (counts + 1) / (counts + 1).sum()
    assert m["unigram_perplexity"] == pytest.approx(math.exp(-probs[labels].log().mean().item()))


def test_forecast_metrics():
    pytest.importorskip("sklearn")
    gen = torch.Generator().manual_seed(2)
    context = torch.randn(50, 8, generator=gen)
    target = context[:, -1:].repeat(1, 3)  # the last value continues: both baselines are exact
    table = forecast_metrics(target + 1, target, context, context, target)
    assert table["model"] == {"mse": pytest.approx(1.0), "mae": pytest.approx(1.0)}
    assert table["last_value"]["mae"] == 0.0
    assert table["ridge_on_lags"]["mae"] < 0.05


def test_reconstruction_grid(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    images = torch.rand(5, 1, 8, 8)
    path = save_reconstructions(images, images.flatten(1), tmp_path / "grid.png")
    with pil.open(path) as grid:
        assert grid.size == (2 + 5 * (64 + 2), 2 + 2 * (LABEL_HEIGHT + 64 + 2))
        for row in range(2):  # each row's label strip holds its text, dark on white
            top = 2 + row * (LABEL_HEIGHT + 64 + 2)
            strip = grid.crop((0, top, grid.width, top + LABEL_HEIGHT))
            lo, hi = strip.getextrema()
            assert lo < 100 and hi == 255


def test_reconstruction_grid_with_a_row_of_samples(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    images = torch.rand(4, 1, 8, 8)
    samples = torch.zeros(6, 64)  # more samples than originals: the grid widens to fit them
    path = save_reconstructions(images, images, tmp_path / "grid.png", samples)
    with pil.open(path) as grid:
        assert grid.size == (2 + 6 * (64 + 2), 2 + 3 * (LABEL_HEIGHT + 64 + 2))
        top = 2 + 2 * (LABEL_HEIGHT + 64 + 2)
        assert grid.crop((0, top, grid.width, top + LABEL_HEIGHT)).getextrema()[0] < 100  # labelled
        assert grid.getpixel((2 + 5 * 66 + 30, top + LABEL_HEIGHT + 30)) == 0  # the sixth sample, black


def test_table_leaves_missing_metrics_blank():
    text = format_table({"model": {"a": 1.0, "b": 0.5}, "baseline": {"b": 0.25}})
    header, model, baseline = text.splitlines()
    assert header.split() == ["a", "b"] and model.split() == ["model", "1.000", "0.5000"]
    assert baseline.split() == ["baseline", "0.2500"] and baseline.index("0.2500") > model.index("1.000")


def test_table_columns_share_one_precision_and_fit_their_names():
    text = format_table({
        "trained model": {"masked_token_accuracy": 0.775, "perplexity": 72.13, "mse": float("inf")},
        "unigram": {"masked_token_accuracy": 0.76666, "perplexity": 191.24, "mse": 0.0123},
    })
    header, model, unigram = text.splitlines()
    assert model.split()[2:] == ["0.7750", "72.1", "inf"]
    assert unigram.split()[1:] == ["0.7667", "191.2", "0.01230"]

    def right_edges(line: str) -> list[int]:
        return [m.end() for m in re.finditer(r"\S+", line)][-3:]

    assert right_edges(header) == right_edges(model) == right_edges(unigram)  # under their names
