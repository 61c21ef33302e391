"""Time series for next-segment prediction: a CSV column (by default the bundled yearly
sunspot numbers, 1700-2008), cut into windows x = s[i:i+L], y = s[i+L:i+L+H], split in
time order, and standardised with statistics of the training part only."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch.utils.data import Dataset

SUNSPOTS = "sunspots.csv"


def load_series(path: str | Path | None = None, column: str | None = None) -> torch.Tensor:
    """A float32 series [n] from a CSV file with a header row (lines starting with # are
    comments). column: the header name; default the last column. path None: the bundled
    yearly sunspot series (309 values)."""
    if path is None:
        text = resources.files(__package__).joinpath(SUNSPOTS).read_text()
        where = f"the bundled {SUNSPOTS}"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"load_series: no file {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"load_series: {path} is not a text CSV file (byte {exc.start} is not UTF-8)"
            ) from None
        where = str(path)
    rows = list(csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#")))
    if len(rows) < 2:
        raise ValueError(f"load_series: {where} needs a header row and at least one value")
    header = [name.strip() for name in rows[0]]
    if column is not None and column not in header:
        raise ValueError(f"load_series: {where} has no column {column!r}; its columns are {header}")
    index = header.index(column) if column is not None else len(header) - 1
    try:
        values = [float(row[index]) for row in rows[1:]]
    except (ValueError, IndexError) as exc:
        raise ValueError(f"load_series: column {header[index]!r} of {where} is not numeric: {exc}") from None
    return torch.tensor(values, dtype=torch.float32)


class WindowDataset(Dataset):
    """(x [L], y [H]) pairs of one split, already standardised."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


@dataclass
class SeriesSplits:
    """Windows of the train, validation and test parts, and the scaler fit on train:
    standardised = (value - mean) / std; `unscale` maps predictions back."""

    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    mean: float
    std: float

    def unscale(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean


def make_windows(
    series: torch.Tensor, context: int, horizon: int, fractions: tuple[float, float] = (0.7, 0.15)
) -> SeriesSplits:
    """Windows of `context` inputs and `horizon` targets. The series is cut in time order
    into train, validation and test parts (fractions of train and validation; test is the
    rest); a window belongs to the part its targets lie in, so validation and test windows
    start `context` points early, in the previous part, and no target is seen twice."""
    if context < 1 or horizon < 1:
        raise ValueError(f"make_windows: context and horizon must be >= 1, got {context} and {horizon}")
    train_frac, val_frac = fractions
    if not (0 < train_frac and 0 <= val_frac and train_frac + val_frac < 1):
        raise ValueError(f"make_windows: fractions must be positive and sum below 1, got {fractions}")
    n = len(series)
    train_end, val_end = math.floor(n * train_frac), math.floor(n * (train_frac + val_frac))
    if train_end < context + horizon:
        raise ValueError(
            f"make_windows: the training part has {train_end} of the {n} points, fewer than one window "
            f"(context {context} + horizon {horizon})"
        )
    train_part = series[:train_end].double()
    mean, std = train_part.mean().item(), train_part.std().item() or 1.0
    scaled = (series - mean) / std
    windows = scaled.unfold(0, context + horizon, 1)  # window i: targets start at i + context
    target_start = torch.arange(len(windows)) + context

    def part(lo: int, hi: int) -> WindowDataset:
        # Windows whose targets lie in [lo, hi).
        keep = (target_start >= lo) & (target_start + horizon <= hi)
        chosen = windows[keep]
        return WindowDataset(chosen[:, :context].clone(), chosen[:, context:].clone())

    return SeriesSplits(part(0, train_end), part(train_end, val_end), part(val_end, n), mean, std)
