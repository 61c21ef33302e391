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


# ----------------------------------------------------------------- gradient caching


def _simclr(dropout: float):
    from ssl_fast.models import SimCLR

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Dropout(dropout))
    return SimCLR(backbone, 32, hidden_dim=32, out_dim=8, temperature=0.3, head_norm=False)


def _grads(model) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return grads


def test_chunked_step_equals_the_full_batch_step():
    model = _simclr(dropout=0.0)
    v0, v1 = torch.randn(20, 12), torch.randn(20, 12)
    full = model.loss(v0, v1)
    full.backward()
    expected = _grads(model)
    loss = model.backward_chunked(v0, v1, chunk_size=6)  # 6, 6, 6, 2
    torch.testing.assert_close(loss, full.detach())
    torch.testing.assert_close(_grads(model), expected)


def test_chunked_step_replays_dropout():
    from ssl_fast.ops.contrastive import nt_xent

    model = _simclr(dropout=0.5)
    v0, v1 = torch.randn(20, 12), torch.randn(20, 12)
    torch.manual_seed(1)  # the reference draws dropout masks chunk by chunk, in the same order
    z0, z1 = (torch.cat([model(c) for c in v.split(7)]) for v in (v0, v1))
    nt_xent(z0, z1, 0.3).backward()
    expected = _grads(model)
    after = torch.get_rng_state()
    torch.manual_seed(1)
    model.backward_chunked(v0, v1, chunk_size=7)
    torch.testing.assert_close(_grads(model), expected)
    assert torch.equal(torch.get_rng_state(), after)


def test_trainer_with_chunks(tmp_path):
    from ssl_fast.train import chunked_backward

    data = TensorDataset(torch.randn(64, 12), torch.randn(64, 12))
    trainer = Trainer(_simclr(0.0), data, _config(tmp_path, steps=4, batch_size=32, chunk_size=8))
    assert len(trainer.fit(progress=False)) == 1
    with pytest.raises(ValueError, match="needs a model with backward_chunked"):
        Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, chunk_size=8))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        chunked_backward(lambda x: x, [torch.zeros(2, 2)], lambda z: z.sum(), 0)


# ----------------------------------------------------------------- the train command


@pytest.mark.parametrize("task", ["autoencoder", "simclr", "forecast", "mlm"])
def test_train_command(task, tmp_path, capsys):
    from ssl_fast.cli import main

    pytest.importorskip("sklearn")
    if task == "mlm":
        pytest.importorskip("tokenizers")
    args = ["train", task, "--steps", "2", "--batch-size", "16", "--out", str(tmp_path), "--quiet"]
    assert main(args + (["--chunk-size", "8"] if task == "simclr" else [])) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == task and result["steps"] == 2
    assert (tmp_path / task / "checkpoint.pt").is_file()
    # Resuming a finished run trains no further and evaluates again.
    assert main(args + ["--resume", str(tmp_path / task / "checkpoint.pt")]) == 0
