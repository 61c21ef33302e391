"""One trainer for every pretext task: the model's own loss(*batch), AdamW with a cosine
schedule after a linear warm-up, optional autocast and gradient clipping, atomic
checkpoints that resume exactly, JSONL metrics, a progress bar, and a clear stop when the
loss stops being finite."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


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
    checkpoint_every: int = 0  # steps; 0: only at the end
    out_dir: str = "runs/ssl"
    num_workers: int = 0
    compile: bool = False
    chunk_size: int = 0  # > 0: contrastive steps in chunks (model.backward_chunked, gradient caching)
    extra: dict = field(default_factory=dict)


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear from 0 over `warmup` steps, then a cosine
    from 1 down to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Trains `model` (any module with loss(*batch) -> scalar) on `dataset`.

    The batch order is a function of (seed, epoch), so a run resumed from a checkpoint
    sees the same batches as one that never stopped, and ends with the same parameters.
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
        if config.chunk_size and not hasattr(model, "backward_chunked"):
            raise ValueError(
                f"Trainer: chunk_size needs a model with backward_chunked, not {type(model).__name__}"
            )
        if config.chunk_size and config.amp == "fp16":
            raise ValueError(
                "Trainer: chunk_size does not combine with amp='fp16' (loss scaling); use 'bf16'"
            )
        torch.manual_seed(config.seed)
        self.model = model.to(self.device)
        self.dataset, self.collate_fn = dataset, collate_fn
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(config.warmup_steps, config.steps)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.step = 0
        self.out_dir = Path(config.out_dir)
        self._loss = torch.compile(self._model_loss) if config.compile else self._model_loss

    # ------------------------------------------------------------------ data

    def _batches(self, epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return DataLoader(
            self.dataset, batch_size=self.config.batch_size, shuffle=True, drop_last=True,
            generator=generator, num_workers=self.config.num_workers, collate_fn=self.collate_fn,
        )

    def _stream(self) -> Iterable:
        """Batches from step self.step on: whole epochs in their fixed orders, skipping the
        batches of the current epoch that earlier steps used."""
        per_epoch = len(self.dataset) // self.config.batch_size
        if per_epoch == 0:
            raise ValueError(
                f"Trainer: the data set has {len(self.dataset)} samples, fewer than one batch of "
                f"{self.config.batch_size}"
            )
        epoch, skip = divmod(self.step, per_epoch)
        while True:
            for i, batch in enumerate(self._batches(epoch)):
                if i >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0

    # ------------------------------------------------------------------ one step

    def _model_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.model.loss(*batch)

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.amp)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

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
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"Trainer: the loss is {value} at step {self.step}; stopping (lower the learning rate "
                f"{self.config.lr}, enable grad_clip, or check the data). The last checkpoint is in "
                f"{self.out_dir}"
            )
        if not self.config.chunk_size:
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
        the logged metrics (also appended to out_dir/metrics.jsonl)."""
        until = self.config.steps if until is None else min(until, self.config.steps)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        bar = _progress(self.config.steps, self.step, progress)
        logged, window, samples, started = [], [], 0, time.perf_counter()
        stream = self._stream()
        while self.step < until:
            window.append(self.train_step(next(stream)))
            samples += self.config.batch_size
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                elapsed = time.perf_counter() - started
                record = {
                    "step": self.step, "loss": sum(window) / len(window),
                    "lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples / max(elapsed, 1e-9),
                }
                logged.append(record)
                with open(self.out_dir / "metrics.jsonl", "a") as out:
                    out.write(json.dumps(record) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
                window, samples, started = [], 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save()
        if bar is not None:
            bar.close()
        self.save()
        return logged

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        numpy_state = _numpy_rng_state()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": asdict(self.config),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": list(random.getstate()[1]),
                "python_pos": random.getstate()[2],
                "numpy": numpy_state,
            },
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Writes the checkpoint atomically (a temporary file renamed over the target), so
        that an interrupted write never leaves a truncated checkpoint."""
        path = Path(path) if path is not None else self.out_dir / "checkpoint.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: str | Path) -> None:
        """Restores a checkpoint written by save(). It is read with weights_only=True: a
        checkpoint file cannot run code."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate((3, tuple(rng["python"]), rng["python_pos"]))
        _set_numpy_rng_state(rng["numpy"])


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
