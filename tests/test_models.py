"""The models of the four pretext tasks: shapes, losses through the fused ops, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssl_fast
from ssl_fast.models import Autoencoder, ConvAutoencoder, MaskedLanguageModel, SeriesForecaster, SimCLR


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _trains(model: nn.Module, loss_fn, steps: int = 30, lr: float = 1e-2) -> tuple[float, float]:
    """First and last loss of a few Adam steps on one fixed batch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_autoencoder_classic_shape_and_training():
    model = Autoencoder()
    widths = [m.out_features for m in model.encoder if isinstance(m, nn.Linear)]
    assert widths == [512, 256, 128]
    assert [m.out_features for m in model.decoder if isinstance(m, nn.Linear)] == [256, 512, 784]
    assert isinstance(model.decoder[-1], nn.Sigmoid)
    x = torch.sigmoid(torch.randn(16, 4) @ torch.randn(4, 784)).view(16, 1, 28, 28)  # learnable structure
    assert model(x).shape == x.shape and model.encode(x).shape == (16, 128)
    torch.testing.assert_close(model.loss(x), F.mse_loss(model(x), x))
    first, last = _trains(model, lambda: model.loss(x))
    assert last < 0.5 * first


@pytest.mark.parametrize("size", [8, 28])
def test_conv_autoencoder(size):
    model = ConvAutoencoder()
    x = torch.rand(4, 1, size, size)
    assert model(x).shape == x.shape
    assert model.encode(x).shape == (4, 64, size // 4, size // 4)
    first, last = _trains(model, lambda: model.loss(x))
    assert last < first


def test_simclr_loss_is_nt_xent_of_the_projections():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    model = SimCLR(backbone, feature_dim=32, hidden_dim=64, out_dim=16, temperature=0.2)
    v0, v1 = torch.rand(10, 1, 8, 8), torch.rand(10, 1, 8, 8)
    loss = model.loss(v0, v1)
    z0, z1 = model(torch.cat([v0, v1])).chunk(2)
    torch.testing.assert_close(loss, ssl_fast.reference.nt_xent(z0, z1, 0.2))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.encode(v0).shape == (10, 32)
    model.zero_grad()
    first, last = _trains(model, lambda: model.loss(v0, v1))  # the positives become the nearest
    assert last < 0.5 * first


def test_masked_language_model_loss_equals_full_cross_entropy():
    model = MaskedLanguageModel(vocab_size=50, dim=32, layers=2, heads=4, max_length=16, dropout=0.0)
    ids = torch.randint(0, 50, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0
    loss = model.loss(ids, labels, attention)
    full = F.cross_entropy(model.logits(ids, attention).flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, full)
    loss.backward()
    assert model.tokens.weight.grad is not None  # the tied head's gradient reaches the embedding
    model.zero_grad()
    first, last = _trains(model, lambda: model.loss(ids, labels, attention))
    assert last < 0.5 * first
    with pytest.raises(ValueError, match="exceed max_length 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_padding_keys_are_not_attended():
    model = MaskedLanguageModel(vocab_size=20, dim=16, layers=1, heads=2, max_length=8, dropout=0.0).eval()
    ids = torch.randint(0, 20, (1, 8))
    attention = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1) % 20
    torch.testing.assert_close(model(ids, attention)[:, :5], model(changed, attention)[:, :5])


@pytest.mark.parametrize("channels", [1, 3])
def test_series_forecaster(channels):
    model = SeriesForecaster(horizon=5, channels=channels, hidden_size=16)
    shape = (8, 20) if channels == 1 else (8, 20, channels)
    t = torch.linspace(0, 6, 25)
    phase = torch.rand(8, 1) if channels == 1 else torch.rand(8, 1, channels)
    series = torch.sin((t if channels == 1 else t[:, None]) + phase)
    x, y = series[:, :20], series[:, 20:]
    assert x.shape == shape and model(x).shape == y.shape
    torch.testing.assert_close(model.loss(x, y), F.smooth_l1_loss(model(x), y))
    first, last = _trains(model, lambda: model.loss(x, y))
    assert last < first
    with pytest.raises(ValueError, match="expects"):
        model(torch.rand(8, 20, channels + 1))


@pytest.mark.parametrize("channels", [1, 3])
def test_series_forecaster_skip_path_and_centering(channels):
    torch.manual_seed(0)
    model = SeriesForecaster(horizon=4, channels=channels, hidden_size=8, num_layers=1, context=12,
                             center=True)
    x = torch.randn(5, 12) if channels == 1 else torch.randn(5, 12, channels)
    level = x.mean(1, keepdim=True)
    # At initialisation the recurrent part adds nothing: the prediction is the linear map of the
    # centred context, shifted back by the window's level.
    linear = model.skip((x - level).reshape(5, -1)).view(5, 4, channels).squeeze(-1) + level
    torch.testing.assert_close(model(x), linear)
    # With a recurrent part too, a shift of a window shifts its forecast by as much.
    torch.nn.init.normal_(model.decoder.weight)
    torch.testing.assert_close(model(x + 3.0), model(x) + 3.0, rtol=1e-5, atol=1e-5)
    first, last = _trains(model, lambda: model.loss(x, x[:, -4:].flip(1)))
    assert last < first
    with pytest.raises(ValueError, match=r"expects \[B, 12\]"):
        model(torch.randn(5, 10) if channels == 1 else torch.randn(5, 10, channels))


def test_bad_configurations():
    with pytest.raises(ValueError, match="at least 2 positive sizes"):
        Autoencoder(widths=(10,))
    with pytest.raises(ValueError, match="784 features per sample"):
        Autoencoder().encode(torch.rand(2, 10))
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvAutoencoder()(torch.rand(2, 1, 10, 10))
    with pytest.raises(ValueError, match="context must be >= 1"):
        SeriesForecaster(horizon=2, context=0)
    with pytest.raises(ValueError, match="multiple of heads"):
        MaskedLanguageModel(10, dim=30, heads=4)
