"""One trainer for every pretext task: the model's own loss(*batch), AdamW with a cosine
schedule after a linear warm-up, optional autocast, gradient clipping and torch.compile,
data-parallel training under torchrun, atomic checkpoints that resume exactly, metrics
to JSONL or CSV (and TensorBoard when installed), a progress bar, and a clear stop when
the loss stops being finite."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import time
import typing
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass
class TrainConfig:
    """What a run does; stored in every checkpoint."""

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float | None = 1.0
    amp: str | None = None  # None, "bf16" (CPU or CUDA) or "fp16" (CUDA, with loss scaling)
    seed: int = 0
    log_every: int = 10
    metrics: str = "jsonl"  # out_dir/metrics.jsonl or out_dir/metrics.csv
    tensorboard: bool = True  # also out_dir/tensorboard/, when tensorboard is installed
    # Periodic checkpoints, whichever comes first (0 turns either off; both 0: only at the end).
    # Time by default, so that a killed run loses about two minutes whatever its step time.
    checkpoint_every: int = 0  # steps
    checkpoint_seconds: float = 120.0  # wall-clock seconds since the last checkpoint
    out_dir: str = "runs/ssl"
    num_workers: int = 0
    compile: bool = False  # torch.compile the loss computation (forward; backward through AOTAutograd)
    chunk_size: int = 0  # > 0: contrastive steps in chunks (model.backward_chunked, gradient caching)
    extra: dict = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        """Where the metrics are written: out_dir/metrics.jsonl or out_dir/metrics.csv."""
        return Path(self.out_dir) / f"metrics.{self.metrics}"


CHECKPOINT = "checkpoint.pt"  # the checkpoint's name in out_dir
_STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "config", "rng")  # of every checkpoint


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear from 0 over `warmup` steps, then a cosine
    from 1 down to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def steps_per_epoch(samples: int, batch_size: int, world: int = 1) -> int:
    """Steps in one epoch: each of `world` ranks gets samples // world of them
    (DistributedSampler, drop_last), in whole batches. ValueError when not even one."""
    steps = samples // world // batch_size
    if steps == 0:
        raise ValueError(
            f"the training set has {samples} samples, fewer than one batch of {batch_size}"
            + (f" on each of {world} ranks" if world > 1 else "")
        )
    return steps


class _Loss(nn.Module):
    """model.loss as a module's forward, so that DistributedDataParallel and torch.compile
    see the whole loss computation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.model.loss(*batch)


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Trains `model` (any module with loss(*batch) -> scalar) on `dataset`.

    The batch order is a function of (seed, epoch), so a run resumed from a checkpoint
    sees the same batches as one that never stopped, and ends with the same parameters.

    Under torch.distributed (e.g. torchrun), each rank trains on its own shard of every
    epoch (DistributedSampler) with batch_size samples per step, the gradients are
    averaged over the ranks (DistributedDataParallel; an all-reduce after chunked steps),
    and rank 0 alone writes metrics and checkpoints.
    """

    def __init__(
        self, model: nn.Module, dataset: Dataset, config: TrainConfig, device: str | torch.device = "cpu",
        collate_fn: Callable | None = None,
    ):
        self.config, self.device = config, torch.device(device)
        if config.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"Trainer: amp must be None, 'bf16' or 'fp16', got {config.amp!r}")
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("Trainer: amp='fp16' needs a CUDA device (use 'bf16' on the CPU)")
        if config.metrics not in ("jsonl", "csv"):
            raise ValueError(f"Trainer: metrics must be 'jsonl' or 'csv', got {config.metrics!r}")
        if config.chunk_size and not hasattr(model, "backward_chunked"):
            raise ValueError(
                f"Trainer: chunk_size needs a model with backward_chunked, not {type(model).__name__}"
            )
        if config.chunk_size and config.amp == "fp16":
            raise ValueError(
                "Trainer: chunk_size does not combine with amp='fp16' (loss scaling); use 'bf16'"
            )
        self.rank, self.world = _world()
        # Distinct random streams per rank (augmentations, dropout); rank 0 keeps the seed.
        torch.manual_seed(config.seed + 1_000_003 * self.rank)
        self.model = model.to(self.device)
        self._loss_module: nn.Module = _Loss(self.model)
        if self.world > 1:
            for tensor in self.model.state_dict().values():  # every rank starts from rank 0's model
                dist.broadcast(tensor, 0)
            if not config.chunk_size:  # chunked steps average their gradients in _sync_gradients
                ids = [self.device.index] if self.device.type == "cuda" else None
                self._loss_module = DistributedDataParallel(self._loss_module, device_ids=ids)
        self._loss = torch.compile(self._loss_module) if config.compile else self._loss_module
        self.dataset, self.collate_fn = dataset, collate_fn
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(config.warmup_steps, config.steps)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.step = 0
        self.train_seconds = 0.0  # wall time in fit() since step 0, over every resume
        self.out_dir = Path(config.out_dir)

    # ------------------------------------------------------------------ data

    def _sampler(self) -> DistributedSampler:
        return DistributedSampler(
            self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.config.seed,
            drop_last=True,
        )

    def _batches(self, epoch: int) -> DataLoader:
        sampler = self._sampler()
        sampler.set_epoch(epoch)
        # The loader's own generator (it seeds workers): drawing from the global one would
        # shift the random stream of a resumed run against one that never stopped.
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return DataLoader(
            self.dataset, batch_size=self.config.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.config.num_workers, collate_fn=self.collate_fn, generator=generator,
        )

    def _stream(self) -> Iterable:
        """Batches from step self.step on: whole epochs in their fixed orders, skipping the
        batches of the current epoch that earlier steps used."""
        per_epoch = steps_per_epoch(len(self.dataset), self.config.batch_size, self.world)
        epoch, skip = divmod(self.step, per_epoch)
        while True:
            for i, batch in enumerate(self._batches(epoch)):
                if i >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.amp)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _sync_gradients(self) -> None:
        """Averages the gradients over the ranks, in one all-reduce."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        """The loss averaged over the ranks, so that every rank takes the same stop decision."""
        if self.world == 1:
            return loss.item()
        total = loss.detach().float().clone()
        dist.all_reduce(total)
        return total.item() / self.world

    def train_step(self, batch) -> float:
        tensors = batch if isinstance(batch, (list, tuple)) else [batch]
        batch = [t.to(self.device, non_blocking=True) for t in tensors]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            if self.config.chunk_size:  # the backward runs inside, chunk by chunk
                loss = self.model.backward_chunked(*batch, chunk_size=self.config.chunk_size)
            else:
                loss = self._loss(*batch)
        value = self._mean_over_ranks(loss)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"Trainer: the loss is {value} at step {self.step}; stopping (lower the learning rate "
                f"{self.config.lr}, enable grad_clip, or check the data). The last checkpoint is in "
                f"{self.out_dir}"
            )
        if self.config.chunk_size:
            if self.world > 1:
                self._sync_gradients()
        else:
            self.scaler.scale(loss).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return value

    # ------------------------------------------------------------------ the loop

    def fit(self, progress: bool = True, until: int | None = None) -> list[dict]:
        """Runs up to step `until` (default config.steps), then writes a checkpoint; returns
        the logged metrics (also written to out_dir, see TrainConfig.metrics). Checkpoints
        are also written along the way (TrainConfig.checkpoint_every / checkpoint_seconds)."""
        until = self.config.steps if until is None else min(until, self.config.steps)
        main = self.rank == 0
        if main:  # what a run killed in the middle of a checkpoint write left
            _partial(self.out_dir / CHECKPOINT).unlink(missing_ok=True)
        log = _MetricsLog(self.out_dir, self.config) if main else None
        bar = _progress(self.config.steps, self.step, progress and main)
        logged, window, samples, started = [], [], 0, time.perf_counter()
        clock = started - self.train_seconds  # when the run would have started, had it never stopped
        saved = started
        stream = self._stream()
        try:
            while self.step < until:
                window.append(self.train_step(next(stream)))
                samples += self.config.batch_size * self.world
                if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                    elapsed = time.perf_counter() - started
                    record = {
                        "step": self.step, "loss": sum(window) / len(window),
                        "lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples / max(elapsed, 1e-9),
                    }
                    logged.append(record)
                    if log is not None:
                        log.write(record)
                    if bar is not None:
                        speed = record["samples_per_s"]
                        bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{speed:.0f}", refresh=False)
                    window, samples, started = [], 0, time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if self.step < until and self._checkpoint_due(saved):
                    saved = self._checkpoint(clock)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        self._checkpoint(clock)
        return logged

    def _checkpoint_due(self, saved: float) -> bool:
        """Whether to checkpoint after this step, the last checkpoint having been written at
        time `saved`. Rank 0's clock decides for every rank: saving is a collective call."""
        every, seconds = self.config.checkpoint_every, self.config.checkpoint_seconds
        if every and self.step % every == 0:
            return True
        if not seconds:
            return False
        due = time.perf_counter() - saved >= seconds
        if self.world > 1:
            flag = torch.tensor(float(due), device=self.device)
            dist.broadcast(flag, 0)
            due = bool(flag.item())
        return due

    def _checkpoint(self, clock: float) -> float:
        """Saves, with the run's training time counted from `clock`; returns when it finished."""
        self.train_seconds = time.perf_counter() - clock
        self.save()
        return time.perf_counter()

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        """Everything a resume needs; the random states of every rank (a collective call
        under torch.distributed)."""
        rng = _rng_state()
        if self.world > 1:
            ranks: list = [None] * self.world
            dist.all_gather_object(ranks, rng)
        else:
            ranks = [rng]
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "config": asdict(self.config),
            "rng": ranks,
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Writes the checkpoint atomically (a temporary file renamed over the target), so
        that an interrupted write never leaves a truncated checkpoint. Every rank calls it;
        rank 0 writes."""
        path = Path(path) if path is not None else self.out_dir / CHECKPOINT
        state = self.state()
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _partial(path)
            torch.save(state, tmp)
            os.replace(tmp, path)
        return path

    def load(self, checkpoint: str | Path | dict) -> None:
        """Restores a checkpoint written by save(), given as its path or as what
        load_checkpoint(path) returned: a checkpoint file cannot run code. A run resumed on
        another number of ranks continues with the random states it has, and is then no
        longer an exact continuation."""
        state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.train_seconds = state.get("train_seconds", 0.0)  # absent from checkpoints of older versions
        _set_rng_state(state["rng"][self.rank % len(state["rng"])])


class _MetricsLog:
    """Appends records to out_dir/metrics.jsonl or metrics.csv, and to TensorBoard's event
    files under out_dir/tensorboard when the tensorboard package is installed."""

    def __init__(self, out_dir: Path, config: TrainConfig):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = config.metrics_path
        self.writer = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed
                pass
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        if self.path.suffix == ".csv":
            new = not self.path.exists()
            with open(self.path, "a", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=list(record))
                if new:
                    writer.writeheader()
                writer.writerow(record)
        else:
            with open(self.path, "a") as out:
                out.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name != "step":
                    self.writer.add_scalar(f"train/{name}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": _numpy_rng_state(),
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate((3, tuple(rng["python"]), rng["python_pos"]))
    _set_numpy_rng_state(rng["numpy"])


def _partial(path: Path) -> Path:
    """Where save() writes the checkpoint `path` before renaming it."""
    return path.with_name(path.name + ".tmp")


def load_checkpoint(path: str | Path) -> dict:
    """The contents of a checkpoint written by Trainer.save, on the CPU, read with
    weights_only=True: a checkpoint file cannot run code. ValueError naming the file when
    it cannot be read (not a torch.save file, truncated, corrupt, or holding objects other
    than tensors and plain data) or lacks what a resume needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}")
    if not zipfile.is_zipfile(path):  # the central directory, at the end, is missing
        raise ValueError(f"cannot read the checkpoint {path}: it is not a file written by torch.save, "
                         "or it is truncated")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's messages advise weights_only=False, which would run the file's code
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise ValueError(
                f"cannot read the checkpoint {path}: besides tensors and plain data it holds {refused[1]}, "
                "whose loading could run code"
            ) from None
        raise ValueError(f"cannot read the checkpoint {path}: it is corrupt") from None
    _check_state(state, path)
    return state


def _check_state(state, path: Path) -> None:
    """ValueError unless `state` has the structure Trainer.state() gives."""
    what = f"{path} is not a checkpoint of ssl_fast's Trainer"
    if not isinstance(state, dict):
        raise ValueError(f"{what}: it holds a {type(state).__name__}")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"{what}: it lacks {', '.join(missing)}")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise ValueError(f"{what}: its step is {state['step']!r}")
    dataclass_from_dict(TrainConfig, state["config"], f"the config of checkpoint {path}")


def dataclass_from_dict(cls: type, values: object, what: str):
    """cls(**values) for a dataclass `cls` and a dict read back from a file, or ValueError
    naming `what` when values is no dict, has a key cls lacks, or a value of another type
    than its field's (an int stands for a float)."""
    if not isinstance(values, dict):
        raise ValueError(f"{what} is a {type(values).__name__}, not a dict")
    types = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in types:
            raise ValueError(f"{what} has an unknown key {key!r}")
        kinds = typing.get_args(types[key]) or (types[key],)
        if not isinstance(value, kinds + ((int,) if float in kinds else ())):
            expected = " or ".join(kind.__name__ for kind in kinds)
            raise ValueError(f"{what} has {key}={value!r}, not of type {expected}")
    return cls(**values)


def _numpy_rng_state() -> dict | None:
    try:
        import numpy as np
    except ImportError:
        return None
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _set_numpy_rng_state(state: dict | None) -> None:
    if state is None:
        return
    import numpy as np

    keys = state["keys"].numpy().astype("uint32")
    np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["cached"]))


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, unit="step", dynamic_ncols=True)
