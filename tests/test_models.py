"""The models of the four pretext tasks: shapes, losses through the fused ops, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssl_fast
from ssl_fast.models import (
    VAE,
    Autoencoder,
    ConvAutoencoder,
    DenoisingAutoencoder,
    MaskedLanguageModel,
    SeriesForecaster,
    SimCLR,
    SparseAutoencoder,
    corrupt,
)


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


# ----------------------------------------------------------------- the autoencoder variants


def _digits_like(n: int = 12, pixels: int = 64, dtype=torch.float32) -> torch.Tensor:
    """[n, 1, 8, 8] images in [0, 1] with a low-rank structure to learn."""
    return torch.sigmoid(torch.randn(n, 3) @ torch.randn(3, pixels)).view(n, 1, 8, 8).to(dtype)


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
@pytest.mark.parametrize("variant", ["l1", "kl", "topk", "denoising", "vae"])
def test_variants_shapes_and_training(variant, conv):
    body = ConvAutoencoder(channels=(8, 16), sigmoid_output=variant != "vae") if conv else Autoencoder(
        (64, 32, 16), sigmoid_output=variant != "vae")
    model = {
        "l1": lambda: SparseAutoencoder(body, "l1", sparsity=1e-3),
        "kl": lambda: SparseAutoencoder(body, "kl", sparsity=1e-2),
        "topk": lambda: SparseAutoencoder(body, None, k=5),
        "denoising": lambda: DenoisingAutoencoder(body, "mask", 0.25),
        "vae": lambda: VAE(body),
    }[variant]()
    x = _digits_like()
    latent = (12, 16, 2, 2) if conv else (12, 16)
    assert model(x).shape == x.shape and model.encode(x).shape == latent
    loss = model.loss(x)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()
    first, last = _trains(model, lambda: model.loss(x), steps=40)
    assert last < first


def test_sparse_losses_equal_the_formulas_in_float64():
    x = _digits_like(dtype=torch.float64)
    for penalty, weight in (("l1", 0.01), ("kl", 0.3)):
        model = SparseAutoencoder(Autoencoder((64, 32, 16)), penalty, sparsity=weight, rho=0.1).double()
        pre = model.body.encoder(x.flatten(1))
        if penalty == "l1":
            z = torch.relu(pre)
            term = z.abs().sum(1).mean()
        else:
            z = torch.sigmoid(pre)
            rho = torch.distributions.Bernoulli(probs=torch.full((16,), 0.1, dtype=torch.float64))
            rho_hat = torch.distributions.Bernoulli(probs=z.mean(0))
            term = torch.distributions.kl_divergence(rho, rho_hat).sum()
        expected = F.mse_loss(model.body.decoder(z).view_as(x), x) + weight * term
        torch.testing.assert_close(model.loss(x), expected)
        grads = torch.autograd.grad(model.loss(x), list(model.parameters()))
        expected_grads = torch.autograd.grad(expected, list(model.parameters()))
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("k", [1, 4, 16])
def test_topk_keeps_exactly_the_k_largest(k, monkeypatch):
    model = SparseAutoencoder(Autoencoder((64, 32, 16)), penalty=None, k=k)
    pre = (torch.randn(7, 16) + 3).requires_grad_()  # all positive: the k kept are all active
    monkeypatch.setattr(model.body, "pre_activation", lambda x: pre)
    z = model.encode(torch.rand(7, 64))
    assert ((z != 0).sum(1) == k).all()
    kept = torch.zeros_like(pre, dtype=torch.bool).scatter(1, pre.topk(k, dim=1).indices, True)
    torch.testing.assert_close(z, torch.where(kept, pre, 0.0))
    (z * torch.arange(16.0)).sum().backward()  # the gradient flows through the kept units only
    torch.testing.assert_close(pre.grad, torch.where(kept, torch.arange(16.0).expand(7, 16), 0.0))


def test_topk_on_feature_maps_and_negative_units():
    model = SparseAutoencoder(ConvAutoencoder(channels=(4, 8)), penalty=None, k=3)
    z = model.encode(torch.rand(5, 1, 8, 8))
    assert z.shape == (5, 8, 2, 2) and ((z != 0).flatten(1).sum(1) <= 3).all() and (z >= 0).all()
    assert model.active(z).flatten(1).sum(1).le(3).all()


@pytest.mark.parametrize("kind", ["gaussian", "mask", "salt_and_pepper"])
def test_corruption_is_reproducible_and_as_specified(kind):
    x = torch.rand(64, 1, 16, 16)
    level = 0.3
    a = corrupt(x, kind, level, torch.Generator().manual_seed(5))
    b = corrupt(x, kind, level, torch.Generator().manual_seed(5))
    c = corrupt(x, kind, level, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = a != x
    n = x.numel()
    if kind == "gaussian":
        noise = (a - x).flatten()
        assert abs(noise.std().item() - level) < 6 * level / (2 * n) ** 0.5  # 6 standard errors
    else:
        rate = changed.double().mean().item()  # binomial: 6 standard deviations of the hit rate
        assert abs(rate - level) < 6 * (level * (1 - level) / n) ** 0.5
        values = {0.0} if kind == "mask" else {0.0, 1.0}
        assert set(a[changed].unique().tolist()) <= values
    if kind == "salt_and_pepper":
        salt = (a[changed] == 1).double().mean().item()
        assert abs(salt - 0.5) < 6 * (0.25 / changed.sum().item()) ** 0.5


def test_corruption_is_drawn_on_the_inputs_device():
    x = torch.rand(4, 8, device="meta")
    for kind in ("gaussian", "mask", "salt_and_pepper"):
        assert corrupt(x, kind, 0.2).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_corruption_on_cuda_with_a_cuda_generator():
    x = torch.rand(32, 64, device="cuda")
    a = corrupt(x, "mask", 0.5, torch.Generator("cuda").manual_seed(1))
    again = corrupt(x, "mask", 0.5, torch.Generator("cuda").manual_seed(1))
    assert a.device == x.device and torch.equal(a, again)


def test_denoising_loss_is_against_the_clean_input():
    model = DenoisingAutoencoder(Autoencoder((64, 32, 16)), "gaussian", 0.2).double()
    x = _digits_like(dtype=torch.float64)
    corrupted = corrupt(x, "gaussian", 0.2, torch.Generator().manual_seed(3))
    loss = model.loss(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, F.mse_loss(model.body(corrupted), x))
    torch.testing.assert_close(model.encode(x), model.body.encode(x))  # no corruption outside loss()
    torch.testing.assert_close(model(x), model.body(x))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_loss_is_the_negative_elbo_in_nats(likelihood):
    body = Autoencoder((64, 32, 16), sigmoid_output=likelihood == "gaussian")
    model = VAE(body, likelihood, sigma=0.2).double()
    x = _digits_like(dtype=torch.float64)
    loss = model.loss(x, torch.Generator().manual_seed(1))
    h = torch.relu(model.body.encoder(x.flatten(1)))
    mu, logvar = model.mu(h), model.logvar(h)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(mu.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = model.body.decoder(z)
    if likelihood == "bernoulli":
        nll = -torch.distributions.Bernoulli(logits=out, validate_args=False).log_prob(x.flatten(1)).sum(1)
    else:
        nll = -torch.distributions.Normal(out, 0.2).log_prob(x.flatten(1)).sum(1)
    normal = torch.distributions.Normal
    kl = torch.distributions.kl_divergence(normal(mu, std), normal(torch.zeros_like(mu), 1.0)).sum(1)
    torch.testing.assert_close(loss, (nll + kl).mean())
    torch.testing.assert_close(model.encode(x), mu)


def test_vae_gradcheck():
    model = VAE(Autoencoder((6, 4, 3), sigmoid_output=False)).double()

    def loss(x):
        return model.loss(x, torch.Generator().manual_seed(0))

    x = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (x,))


def test_vae_beta_warmup_and_its_counter_in_the_state_dict():
    model = VAE(Autoencoder((64, 32, 16), sigmoid_output=False), beta=2.0, beta_warmup_steps=4)
    x = _digits_like()
    assert model.current_beta().item() == 0.0
    for expected in (0.5, 1.0, 1.5, 2.0, 2.0):
        model.loss(x)
        assert model.current_beta().item() == pytest.approx(expected)
    assert model.state_dict()["step"].item() == 5
    model.eval()
    model.loss(x)  # evaluation does not advance the ramp
    assert model.step.item() == 5
    fresh = VAE(Autoencoder((64, 32, 16), sigmoid_output=False), beta=2.0, beta_warmup_steps=4)
    fresh.load_state_dict(model.state_dict())
    assert fresh.current_beta().item() == 2.0
    no_warmup = VAE(Autoencoder((64, 32, 16), sigmoid_output=False), beta=0.7)
    assert no_warmup.current_beta().item() == pytest.approx(0.7)


def test_vae_samples():
    mlp = VAE(Autoencoder((64, 32, 16), sigmoid_output=False))
    samples = mlp.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 64) and 0 <= samples.min() and samples.max() <= 1
    assert mlp.sample(5, (1, 8, 8)).shape == (5, 1, 8, 8)
    torch.testing.assert_close(samples, mlp.sample(5, generator=torch.Generator().manual_seed(0)))
    conv = VAE(ConvAutoencoder(channels=(4, 8), sigmoid_output=False))
    assert conv.sample(3, (1, 8, 8)).shape == (3, 1, 8, 8)
    assert VAE(likelihood="gaussian").sample(2).shape == (2, 784)
    with pytest.raises(ValueError, match="needs image_shape"):
        conv.sample(3)


def test_variant_configuration_errors():
    with pytest.raises(ValueError, match="penalty must be 'l1', 'kl' or None, got 'l2'"):
        SparseAutoencoder(penalty="l2")
    with pytest.raises(ValueError, match="rho must be in"):
        SparseAutoencoder(penalty="kl", rho=1.0)
    with pytest.raises(ValueError, match="never is"):
        SparseAutoencoder(penalty="kl", k=3)
    with pytest.raises(ValueError, match="k=17 exceeds the latent's 16 units"):
        SparseAutoencoder(Autoencoder((64, 16)), penalty=None, k=17).encode(torch.rand(2, 64))
    with pytest.raises(ValueError, match="corruption must be one of gaussian, mask, salt_and_pepper"):
        DenoisingAutoencoder(corruption="blur")
    with pytest.raises(ValueError, match="noise 1.5 is not a mask level"):
        DenoisingAutoencoder(corruption="mask", noise=1.5)
    with pytest.raises(ValueError, match="sigmoid_output=False"):
        VAE(Autoencoder())
    with pytest.raises(ValueError, match="likelihood must be"):
        VAE(likelihood="poisson")
    with pytest.raises(TypeError, match="body must be an Autoencoder or a ConvAutoencoder, got Linear"):
        SparseAutoencoder(nn.Linear(3, 3))


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
