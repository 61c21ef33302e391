"""The trainer: learning, exact resume from atomic periodic checkpoints, safe loading, NaN stop;
the train and eval commands, their user errors, and a killed run resumed."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import idx_folder, requires_cuda
from torch.utils.data import TensorDataset

from ssl_fast.models import Autoencoder, SeriesForecaster
from ssl_fast.train import TrainConfig, Trainer
from ssl_fast.train.trainer import cosine_with_warmup, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


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
    # Checkpoints after every step change nothing: saving reads the random states, never draws.
    torch.manual_seed(0)  # both runs start from the same parameters
    straight = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path / "a", checkpoint_every=1))
    straight.fit(progress=False)

    torch.manual_seed(0)
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
    message = f"cannot read the checkpoint {path}: besides tensors and plain data it holds print, "
    with pytest.raises(ValueError, match=re.escape(message + "whose loading could run code")):
        trainer.load(path)


class _SavingSteps(Trainer):
    """Records the step of every checkpoint written."""

    def save(self, path=None):
        self.saved = [*getattr(self, "saved", []), self.step]
        return super().save(path)


@pytest.mark.parametrize(("every", "seconds", "saved"), [
    (4, 0.0, [4, 8, 12]),  # every 4 steps, the last one once
    (0, 1e-9, list(range(1, 13))),  # a time interval always past: after every step
    (0, 3600.0, [12]),  # an hour: only at the end
    (5, 3600.0, [5, 10, 12]),  # whichever comes first
])
def test_periodic_checkpoints(tmp_path, every, seconds, saved):
    config = _config(tmp_path, checkpoint_every=every, checkpoint_seconds=seconds, tensorboard=False)
    trainer = _SavingSteps(Autoencoder((64, 8)), _images(), config)
    trainer.fit(progress=False)
    assert trainer.saved == saved


def test_a_killed_write_is_cleaned_up_and_the_time_adds_up(tmp_path):
    first = Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, tensorboard=False))
    first.fit(progress=False, until=5)
    assert first.train_seconds > 0
    leftover = tmp_path / "checkpoint.pt.tmp"  # what a kill during torch.save leaves
    leftover.write_bytes(b"half a checkpoint")
    resumed = Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, tensorboard=False))
    resumed.load(tmp_path / "checkpoint.pt")
    assert resumed.train_seconds == first.train_seconds
    resumed.fit(progress=False)
    assert not leftover.exists()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["train_seconds"] == resumed.train_seconds
    assert resumed.train_seconds > first.train_seconds


def _state(**changes) -> dict:
    trainer = Trainer(Autoencoder((64, 8)), _images(), TrainConfig())
    return {**trainer.state(), **changes}


UNREADABLE = {  # file contents -> the end of the message
    "random bytes": (lambda: torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                           generator=torch.Generator().manual_seed(0)).numpy().tobytes(),
                     "it is not a file written by torch.save, or it is truncated"),
    "a truncated checkpoint": (lambda: _saved(_state())[:-100], "it is not a file written by torch.save, "
                               "or it is truncated"),
    "a corrupt pickle": (lambda: _saved(_state()).replace(b"\x80\x02}q\x00", b"\x80\x02\xff\xff"),
                         "it is corrupt"),
}


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_checkpoints(tmp_path, case):
    contents, message = UNREADABLE[case]
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(contents())
    with pytest.raises(ValueError, match=re.escape(f"cannot read the checkpoint {path}: {message}") + "$"):
        load_checkpoint(path)


WRONG_STRUCTURE = {  # checkpoint contents -> the end of the message
    "a list": ([1, 2], "is not a checkpoint of ssl_fast's Trainer: it holds a list"),
    "missing entries": ({"model": {}, "config": {}}, "it lacks optimizer, scheduler, scaler, step, rng"),
    "a negative step": (lambda: _state(step=-1), "its step is -1"),
    "a config string": (lambda: _state(config="lr=0.1"), "is a str, not a dict"),
    "an unknown config key": (lambda: _state(config={"steps": 3, "momentum": 0.9}),
                              "has an unknown key 'momentum'"),
    "a config value of none of its types": (lambda: _state(config={"amp": 16}),
                                            "has amp=16, not of type str or NoneType"),
    "a config value of another type": (lambda: _state(config={"steps": "ten"}),
                                       "has steps='ten', not of type int"),
}


@pytest.mark.parametrize("case", list(WRONG_STRUCTURE))
def test_checkpoints_of_the_wrong_structure(tmp_path, case):
    contents, message = WRONG_STRUCTURE[case]
    path = tmp_path / "checkpoint.pt"
    torch.save(contents() if callable(contents) else contents, path)
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        load_checkpoint(path)


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
    loss = model.backward_chunked(v0, v1, chunk_size=6)  # balanced: four chunks of 5
    torch.testing.assert_close(loss, full.detach())
    torch.testing.assert_close(_grads(model), expected)


def test_no_chunk_of_one_image():
    from ssl_fast.models import SimCLR

    model = SimCLR(torch.nn.Linear(12, 16), 16, hidden_dim=16, out_dim=8)  # batch norm in the head
    v0, v1 = torch.randn(9, 12), torch.randn(9, 12)
    assert torch.isfinite(model.backward_chunked(v0, v1, chunk_size=8))  # 5 + 4, not 8 + 1


def test_chunked_step_replays_dropout():
    from ssl_fast.ops.contrastive import nt_xent

    model = _simclr(dropout=0.5)
    v0, v1 = torch.randn(20, 12), torch.randn(20, 12)
    torch.manual_seed(1)  # the reference draws dropout masks chunk by chunk, in the same order
    z0, z1 = (torch.cat([model(c) for c in v.tensor_split(3)]) for v in (v0, v1))
    nt_xent(z0, z1, 0.3).backward()
    expected = _grads(model)
    after = torch.get_rng_state()
    torch.manual_seed(1)
    model.backward_chunked(v0, v1, chunk_size=7)
    torch.testing.assert_close(_grads(model), expected)
    assert torch.equal(torch.get_rng_state(), after)


def test_trainer_with_chunks(tmp_path):
    from ssl_fast.models import chunked_backward

    data = TensorDataset(torch.randn(64, 12), torch.randn(64, 12))
    trainer = Trainer(_simclr(0.0), data, _config(tmp_path, steps=4, batch_size=32, chunk_size=8))
    assert len(trainer.fit(progress=False)) == 1
    with pytest.raises(ValueError, match="needs a model with backward_chunked"):
        Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, chunk_size=8))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        chunked_backward(lambda x: x, [torch.zeros(2, 2)], lambda z: z.sum(), 0)


# ----------------------------------------------------------------- metrics and compile


def test_csv_metrics_and_tensorboard(tmp_path):
    trainer = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path, steps=8, metrics="csv"))
    trainer.fit(progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,samples_per_s" and [r.split(",")[0] for r in rows[1:]] == ["4", "8"]
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="metrics must be"):
        Trainer(Autoencoder((64, 8)), _images(), _config(tmp_path, metrics="xml"))


def test_compiled_loss_trains_like_the_eager_one(tmp_path):
    torch.manual_seed(0)
    eager = Trainer(Autoencoder((64, 32, 8)), _images(), _config(tmp_path / "e", steps=3, tensorboard=False))
    eager.fit(progress=False)
    torch.manual_seed(0)
    compiled = Trainer(Autoencoder((64, 32, 8)), _images(),
                       _config(tmp_path / "c", steps=3, compile=True, tensorboard=False))
    compiled.fit(progress=False)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- the train and eval commands


def _run(argv, capsys) -> tuple[int, str, str]:
    from ssl_fast.cli import main

    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("task", ["autoencoder", "simclr", "forecast", "mlm"])
def test_train_and_eval_commands(task, tmp_path, capfd):
    pytest.importorskip("sklearn")
    if task == "mlm":
        pytest.importorskip("tokenizers")
    args = ["train", task, "--steps", "2", "--batch-size", "16", "--out", str(tmp_path), "--quiet", "--json"]
    # capfd: the tokenizer trainer writes to the file descriptor, past sys.stdout.
    status, out, err = _run(args + (["--chunk-size", "8"] if task == "simclr" else []), capfd)
    assert status == 0, err
    assert len(out.splitlines()) == 1, out  # --quiet --json: one JSON line, nothing else
    result = json.loads(out)
    assert result["task"] == task and result["steps"] == 2 and result["evaluation"]
    run = tmp_path / task
    assert (run / "checkpoint.pt").is_file() and json.loads((run / "eval.json").read_text()) == result
    expected_rows = {
        "autoencoder": {"trained encoder", "raw pixels", "random-init encoder", "mean image"},
        "simclr": {"trained encoder", "raw pixels", "random-init encoder"},
        "forecast": {"model", "last_value", "ridge_on_lags"},
        "mlm": {"trained model", "unigram"},
    }[task]
    assert set(result["evaluation"]) == expected_rows
    if task == "autoencoder":
        assert importlib.util.find_spec("PIL") is None or (run / "reconstructions.png").stat().st_size > 0
    assert importlib.util.find_spec("matplotlib") is None or (run / "curves.png").stat().st_size > 0
    # eval RUN_DIR rebuilds the task from the checkpoint, gives the same table and draws the curves again.
    (run / "curves.png").unlink(missing_ok=True)
    status, out, err = _run(["eval", str(run), "--json"], capfd)
    assert status == 0, err
    assert json.loads(out.strip().splitlines()[-1])["evaluation"] == result["evaluation"]
    assert importlib.util.find_spec("matplotlib") is None or (run / "curves.png").stat().st_size > 0


@requires_cuda
@pytest.mark.parametrize("amp", [None, "bf16"], ids=["cuda-fp32", "cuda-amp_bf16"])
def test_train_simclr_on_cuda(amp, tmp_path, capfd):
    """SimCLR on the GPU (its NT-Xent on the CUDA kernels), in fp32 and under bf16 autocast:
    the loss falls and the evaluation's table comes back."""
    pytest.importorskip("sklearn")
    args = ["train", "simclr", "--device", "cuda", "--steps", "30", "--out", str(tmp_path), "--quiet",
            "--json", "--metrics", "csv"]
    status, out, err = _run(args + (["--amp", amp] if amp else []), capfd)
    assert status == 0, err
    result = json.loads(out)
    assert result["steps"] == 30 and "trained encoder" in result["evaluation"]
    with open(tmp_path / "simclr" / "metrics.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses


def test_validation_holdout_never_reads_the_test_part(tmp_path):
    """holdout="validation": simclr trains on a subset of its test-holdout training images and
    evaluates on the rest of them; forecast evaluates on the series' validation windows."""
    pytest.importorskip("sklearn")
    from ssl_fast.data import load_series, make_windows
    from ssl_fast.train.tasks import TaskOptions, build_task

    def rows(task) -> set[bytes]:
        return {image.numpy().tobytes() for (image,) in task.dataset}

    full = build_task("simclr", TaskOptions(seed=3), tmp_path)
    fit = build_task("simclr", TaskOptions(seed=3, holdout="validation"), tmp_path)
    assert len(fit.dataset) == int(len(full.dataset) * 0.8) and rows(fit) < rows(full)
    table = fit.evaluate(fit.model, tmp_path)
    assert set(table) == {"trained encoder", "raw pixels", "random-init encoder"}

    task = build_task("forecast", TaskOptions(holdout="validation"), tmp_path)
    splits = make_windows(load_series(), 24, 6)
    val_x, val_y = splits.unscale(splits.val.x), splits.unscale(splits.val.y)
    last_value = (val_y - val_x[:, -1:]).abs().mean().item()
    assert task.evaluate(task.model, tmp_path)["last_value"]["mae"] == pytest.approx(last_value)


VARIANT_METRICS = {  # the metrics each variant adds to the trained row, and its extra baseline rows
    "sparse": ({"active_fraction"}, set()),
    "topk": ({"active_fraction"}, set()),
    "denoising": ({"denoised_mse"}, {"corrupted input"}),
    "vae": ({"neg_elbo_nats"}, set()),
}


@pytest.mark.parametrize("variant", list(VARIANT_METRICS))
def test_autoencoder_variants_train_and_eval(variant, tmp_path, capsys):
    pytest.importorskip("sklearn")
    args = ["train", "autoencoder", "--variant", variant, "--steps", "2", "--batch-size", "16", "--out",
            str(tmp_path), "--quiet", "--json", "--no-tensorboard"]
    status, out, err = _run(args, capsys)
    assert status == 0, err
    result = json.loads(out)
    metrics, rows = VARIANT_METRICS[variant]
    table = result["evaluation"]
    assert set(table) == {"trained encoder", "raw pixels", "random-init encoder", "mean image"} | rows
    assert set(table["trained encoder"]) == {"knn_top1", "linear_probe", "reconstruction_mse"} | metrics
    run = tmp_path / f"autoencoder-{variant}"  # each variant in its own folder
    options = load_checkpoint(run / "checkpoint.pt")["config"]["extra"]["options"]
    assert options["variant"] == variant
    if variant == "sparse":
        assert 0 < table["trained encoder"]["active_fraction"] <= 1 and options["sparsity"] == 1e-4
    if variant == "vae":
        assert table["random-init encoder"]["neg_elbo_nats"] > table["trained encoder"]["neg_elbo_nats"] > 0
    if variant == "denoising":
        assert table["mean image"]["denoised_mse"] == table["mean image"]["reconstruction_mse"]
    if importlib.util.find_spec("PIL") is not None:  # the VAE's grid has a third row of samples
        from PIL import Image

        from ssl_fast.train.evaluate import LABEL_HEIGHT

        with Image.open(run / "reconstructions.png") as grid:
            assert grid.height == 2 + (3 if variant == "vae" else 2) * (LABEL_HEIGHT + 64 + 2)
    status, out, err = _run(["eval", str(run), "--json"], capsys)  # rebuilds the same variant
    assert status == 0, err
    assert json.loads(out)["evaluation"] == table


def test_a_resumed_variant_keeps_its_options(tmp_path, capsys):
    pytest.importorskip("sklearn")
    base = ["train", "autoencoder", "--batch-size", "16", "--out", str(tmp_path), "--quiet", "--json",
            "--no-tensorboard"]
    status, out, err = _run(base + ["--variant", "vae", "--beta", "0.5", "--steps", "2"], capsys)
    assert status == 0, err
    checkpoint = tmp_path / "autoencoder-vae" / "checkpoint.pt"
    status, out, err = _run(base + ["--variant", "vae", "--resume", "--steps", "3"], capsys)
    assert status == 0, err
    assert json.loads(out)["steps"] == 3
    assert load_checkpoint(checkpoint)["model"]["step"].item() == 3  # the warm-up counter continues
    for option, was in ((["--variant", "topk"], "--variant vae"), (["--beta", "2"], "--beta 0.5")):
        status, out, err = _run(base + ["--resume", str(checkpoint), "--steps", "4"] + option, capsys)
        assert status == 2 and out == ""
        assert err == (f"ssl_fast: error: --resume: {checkpoint} was trained with {was}, and a resumed "
                       f"run keeps its options; drop {option[0]}, or start a new run with another --out\n")
    status, out, err = _run(base + ["--resume", str(checkpoint), "--steps", "4", "--k", "2"], capsys)
    assert status == 2 and err == "ssl_fast: error: --k applies to --variant topk, not vae\n"


def test_an_idx_folder_is_split_as_published(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from ssl_fast.train.tasks import TaskOptions, build_task

    idx_folder(tmp_path / "mnist", n_train=40, n_test=24, size=(8, 8), classes=3)
    task = build_task("autoencoder", TaskOptions(data=str(tmp_path / "mnist")), tmp_path)
    assert len(task.dataset) == 40  # the training files; t10k is held out
    args = ["train", "autoencoder", "--data", str(tmp_path / "mnist"), "--steps", "2", "--batch-size", "16",
            "--out", str(tmp_path), "--quiet", "--no-tensorboard"]
    status, out, err = _run(args, capsys)
    assert status == 0, err
    assert "trained encoder" in out


def test_resume_extends_the_stored_run(tmp_path, capsys, monkeypatch):
    base = ["train", "forecast", "--batch-size", "16", "--out", str(tmp_path), "--quiet", "--json"]
    checkpoint_path = tmp_path / "forecast" / "checkpoint.pt"
    with monkeypatch.context() as hidden:  # without matplotlib, the run completes without curves.png
        hidden.setitem(sys.modules, "matplotlib", None)
        status, out, err = _run(base + ["--steps", "3", "--column", "sunspots"], capsys)
    assert status == 0, err
    assert err == ("ssl_fast: curves.png needs matplotlib, which is not installed (pip install "
                   "'ssl_fast[plot]'); the run is complete without it\n")
    assert not (tmp_path / "forecast" / "curves.png").exists()
    first_seconds = json.loads(out)["train_seconds"]
    stored = load_checkpoint(checkpoint_path)["config"]
    assert (stored["checkpoint_every"], stored["checkpoint_seconds"]) == (0, 120)  # the default: 2 minutes
    # The stored options (here the column) and configuration continue; --steps extends the run,
    # and --checkpoint-every changes the interval.
    status, out, err = _run(base + ["--steps", "12", "--resume", "--checkpoint-every", "1"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["steps"] == 12
    # train_seconds is the run's total, not the resumed part's.
    checkpoint = load_checkpoint(checkpoint_path)
    assert result["train_seconds"] == round(checkpoint["train_seconds"], 2) >= first_seconds > 0
    assert (checkpoint["config"]["checkpoint_every"], checkpoint["config"]["checkpoint_seconds"]) == (1, 0)
    # A finished run resumed trains no further, says so, and is evaluated again.
    status, out, err = _run(base[:-1] + ["--resume"], capsys)
    assert status == 0, err
    assert err.splitlines()[0] == (f"ssl_fast: {checkpoint_path} has finished its 12 steps; nothing to "
                                   "train, evaluating it (--steps above 12 would continue it)")
    assert out.startswith("forecast: 12 steps") and "ridge_on_lags" in out
    config = load_checkpoint(checkpoint_path)["config"]
    assert config["steps"] == 12 and config["extra"]["options"]["column"] == "sunspots"
    # An option that would change the stored run is refused; one that repeats it is accepted (--batch-size).
    for option, was in ((["--lr", "0.5"], "--lr 0.001"), (["--column", "year"], "--column sunspots"),
                        (["--seed", "3"], "--seed 0"), (["--compile"], "without --compile"),
                        (["--chunk-size", "4"], "without --chunk-size")):
        status, out, err = _run(base + ["--steps", "20", "--resume"] + option, capsys)
        assert status == 2 and out == ""
        assert err == (f"ssl_fast: error: --resume: {checkpoint_path} was trained with {was}, and a resumed "
                       f"run keeps its options; drop {option[0]}, or start a new run with another --out\n")
    # A length the run has already reached is refused.
    for length in (["--steps", "12"], ["--steps", "2"], ["--epochs", "1"]):
        status, out, err = _run(base + length + ["--resume"], capsys)
        asked = " ".join(length) + (" (11 steps)" if length[0] == "--epochs" else "")
        assert status == 2 and out == ""
        assert err == (f"ssl_fast: error: --resume: {checkpoint_path} is at step 12 already, so {asked} "
                       "leaves nothing to train; ask for more, or evaluate it with "
                       f"`python -m ssl_fast eval {checkpoint_path.parent}`\n")


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "no connection"])
def test_a_tokenizer_neither_local_nor_cached_fails_at_once(offline, tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    started = time.perf_counter()
    status, out, err = _run(["train", "mlm", "--tokenizer", "no-such-name", "--out", str(tmp_path)], capsys)
    assert time.perf_counter() - started < 20  # the hub client's retries took 50 s
    reason = "HF_HUB_OFFLINE is set" if offline else "http://127.0.0.1:9 cannot be reached ("
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("ssl_fast: error: the tokenizer 'no-such-name' is neither a folder nor in the "
                          f"local Hugging Face cache, and cannot be downloaded: {reason}"), err


def test_a_tokenizer_folder_that_does_not_exist(tmp_path, capsys):
    pytest.importorskip("transformers")
    folder = tmp_path / "tokenizer"
    status, out, err = _run(["train", "mlm", "--tokenizer", str(folder), "--out", str(tmp_path)], capsys)
    assert status == 2 and out == ""
    assert err == f"ssl_fast: error: cannot load the tokenizer '{folder}': there is no such folder\n"


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, capsys):
    """SIGKILL once a periodic checkpoint exists; --resume then ends with the parameters of a
    run that was never killed."""
    pytest.importorskip("sklearn")
    args = ["train", "forecast", "--steps", "30", "--batch-size", "16", "--checkpoint-every", "5", "--quiet",
            "--no-tensorboard"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    checkpoint = killed / "forecast" / "checkpoint.pt"
    first = subprocess.Popen([sys.executable, "-m", "ssl_fast", *args, "--out", str(killed)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not checkpoint.exists():  # it appears whole: written aside, then renamed
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint after 3 minutes"
        time.sleep(0.01)
    first.kill()
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    assert 5 <= load_checkpoint(checkpoint)["step"] < 30
    status, out, err = _run([*args, "--out", str(killed), "--resume", "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["steps"] == 30
    assert _run([*args, "--out", str(straight)], capsys)[0] == 0
    resumed = load_checkpoint(checkpoint)["model"]
    expected = load_checkpoint(straight / "forecast" / "checkpoint.pt")["model"]
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)


def _files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n\n")
    (tmp_path / "short.csv").write_text("year,value\n" + "".join(f"{i},{i}\n" for i in range(20)))
    (tmp_path / "words.csv").write_text("year,value\n1,a\n2,b\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)))
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "flat.npy", np.zeros(10))
    np.save(tmp_path / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    (tmp_path / "random.npy").write_bytes(UNREADABLE["random bytes"][0]())
    (tmp_path / "random.pt").write_bytes(UNREADABLE["random bytes"][0]())
    (tmp_path / "truncated.pt").write_bytes(UNREADABLE["a truncated checkpoint"][0]())
    idx_folder(tmp_path / "idx")
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte").unlink()
    torch.save(_state(config="lr=0.1"), tmp_path / "config_string.pt")
    torch.save(_state(), tmp_path / "library_run.pt")  # no task in config.extra
    extra = {"task": "forecast", "options": {"seed": 0, "window": 12}}
    torch.save(_state(config={"extra": extra}), tmp_path / "unknown_option.pt")
    return tmp_path


BAD_INPUTS = {
    "missing image file": (["train", "simclr", "--data", "{tmp}/missing.npy"], "no file"),
    "image array of the wrong shape": (["train", "autoencoder", "--data", "{tmp}/flat.npy"], "shape"),
    "folder without text": (["train", "mlm", "--data", "{tmp}/empty"], "no .txt file"),
    "empty corpus": (["train", "mlm", "--data", "{tmp}/blank.txt"], "empty"),
    "missing series": (["train", "forecast", "--data", "{tmp}/missing.csv"], "no file"),
    "series shorter than a window": (["train", "forecast", "--data", "{tmp}/short.csv"], "than one window"),
    "unknown column": (["train", "forecast", "--data", "{tmp}/short.csv", "--column", "x"], "no column 'x'"),
    "non-numeric column": (["train", "forecast", "--data", "{tmp}/words.csv"], "not numeric"),
    "zero steps": (["train", "forecast", "--steps", "0"], "positive integer"),
    "negative learning rate": (["train", "forecast", "--lr", "-1"], "positive number"),
    "steps and epochs": (["train", "forecast", "--steps", "3", "--epochs", "1"], "not allowed with"),
    "batch larger than the data": (["train", "forecast", "--batch-size", "100000"], "has 187 samples, fewer "
                                   "than one batch of 100000: pass --batch-size 187 or less"),
    "bad device": (["train", "forecast", "--device", "tpu"], "cpu or cuda"),
    "resume without a checkpoint": (["train", "forecast", "--resume"], "no checkpoint"),
    "eval without a run": (["eval", "{tmp}/empty"], "no checkpoint.pt"),
    "eval of a file that is no checkpoint": (["eval", "{tmp}/short.csv"],
                                             "cannot read the checkpoint {tmp}/short.csv: it is not a file "
                                             "written by torch.save, or it is truncated"),
    "strings as images": (["train", "simclr", "--data", "{tmp}/strings.npy"],
                          "the images in {tmp}/strings.npy are strings, not real numbers"),
    "random bytes as images": (["train", "autoencoder", "--data", "{tmp}/random.npy"],
                               "cannot read {tmp}/random.npy: it is not a NumPy file of arrays"),
    "binary file as the series": (["train", "forecast", "--data", "{tmp}/binary.csv"],
                                  "{tmp}/binary.csv is not a text CSV file (byte 128 is not UTF-8)"),
    "eval of random bytes": (["eval", "{tmp}/random.pt"], "cannot read the checkpoint {tmp}/random.pt: it "
                             "is not a file written by torch.save, or it is truncated"),
    "resume from random bytes": (["train", "forecast", "--resume", "{tmp}/random.pt"],
                                 "cannot read the checkpoint {tmp}/random.pt"),
    "eval of a truncated checkpoint": (["eval", "{tmp}/truncated.pt"],
                                       "cannot read the checkpoint {tmp}/truncated.pt: it is not a file "
                                       "written by torch.save, or it is truncated"),
    "resume from a truncated checkpoint": (["train", "forecast", "--resume", "{tmp}/truncated.pt"],
                                           "cannot read the checkpoint {tmp}/truncated.pt"),
    "checkpoint whose config is a string": (["eval", "{tmp}/config_string.pt"],
                                            "the config of checkpoint {tmp}/config_string.pt is a str"),
    "resume with an unknown task option": (["train", "forecast", "--resume", "{tmp}/unknown_option.pt"],
                                           "the task config of checkpoint {tmp}/unknown_option.pt has an "
                                           "unknown key 'window'"),
    "eval of a checkpoint of another program": (["eval", "{tmp}/library_run.pt"],
                                                "{tmp}/library_run.pt was not written by `ssl_fast train`"),
    "validation holdout of a task without one": (["train", "mlm", "--holdout", "validation"],
                                                 "holdout 'validation' is offered by autoencoder, simclr, "
                                                 "forecast, not mlm"),
    "an option of another variant": (["train", "autoencoder", "--variant", "vae", "--k", "3"],
                                     "--k applies to --variant topk, not vae"),
    "a variant's option without the variant": (["train", "autoencoder", "--noise", "0.1"],
                                               "--noise applies to --variant denoising, not plain"),
    "a variant for another task": (["train", "simclr", "--variant", "vae"],
                                   "--variant applies to the autoencoder task only, not simclr"),
    "an unknown variant": (["train", "autoencoder", "--variant", "contractive"],
                           "invalid choice: 'contractive'"),
    "an IDX folder missing a file": (["train", "autoencoder", "--data", "{tmp}/idx"],
                                     "{tmp}/idx lacks t10k-labels-idx1-ubyte[.gz]; a folder of IDX files"),
    "bad checkpoint interval": (["train", "forecast", "--checkpoint-every", "5x"],
                                "must be a number of steps or a time such as 90s, 10min or 1h, got '5x'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_user_errors_exit_2_with_one_line(case, tmp_path, capsys):
    pytest.importorskip("sklearn")
    argv, message = BAD_INPUTS[case]
    folder = _files(tmp_path)
    argv, message = [a.format(tmp=folder) for a in argv], message.format(tmp=folder)
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "runs")]
    status, out, err = _run(argv, capsys)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and message in err, err
