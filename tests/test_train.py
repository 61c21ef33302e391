"""The trainer: learning, exact resume from an atomic checkpoint, safe loading, NaN stop."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from ssl_fast.models import Autoencoder, SeriesForecaster
from ssl_fast.train import TrainConfig, Trainer
from ssl_fast.train.trainer import cosine_with_warmup


def _images() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.sigmoid(torch.randn(96, 4, generator=gen) @ torch.randn(4, 64, generator=gen)))


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=12, batch_size=16, lr=3e-3, warmup_steps=3, log_every=4, out_dir=str(tmp_path), seed=5)
    return TrainConfig(**{**base, **kw})


def test_schedule():
    f = cosine_with_warmup(4, 20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(12) == pytest.approx(0.5) and f(20) == pytest.approx(0.0)


def test_fit_learns_and_logs(tmp_path):
    trainer = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path, steps=40))
    logged = trainer.fit(progress=False)
    assert logged[-1]["loss"] < logged[0]["loss"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(4, 41, 4))
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_resume_is_exact(tmp_path):
    straight = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path / "a"))
    straight.fit(progress=False)

    first = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path / "b"))
    first.fit(progress=False, until=7)  # stops in the middle of the second epoch (6 batches an epoch)
    torch.manual_seed(123)  # the resumed process starts from another RNG state
    resumed = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path / "b"))
    resumed.load(tmp_path / "b" / "checkpoint.pt")
    assert resumed.step == 7
    resumed.fit(progress=False)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    trainer = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path))
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        trainer.load(path)


def test_non_finite_loss_stops_with_a_message(tmp_path):
    data = TensorDataset(torch.full((32, 10), float("nan")), torch.zeros(32, 2))
    trainer = Trainer(SeriesForecaster(horizon=2, hidden_size=4), data, _config(tmp_path))
    with pytest.raises(FloatingPointError, match="the loss is nan at step 0"):
        trainer.fit(progress=False)


def test_bf16_autocast_on_cpu(tmp_path):
    trainer = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path, steps=3, amp="bf16"))
    assert len(trainer.fit(progress=False)) == 1


def test_bad_config(tmp_path):
    with pytest.raises(ValueError, match="amp must be None"):
        Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, amp="fp8"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, amp="fp16"))
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, batch_size=1000)).fit(progress=False)
