"""curves.png of a training run: the loss and the learning rate against steps, and where the
run was evaluated, its headline metric at its last step beside the baselines' values."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

from .._plotting import figure


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The records of a metrics file (metrics.jsonl or metrics.csv), by step. A resumed run
    may log a step again (one it did before its last checkpoint): the later record counts."""
    with open(path, newline="") as lines:
        records = csv.DictReader(lines) if path.suffix == ".csv" else map(json.loads, lines)
        by_step = {int(float(r["step"])): {k: float(v) for k, v in r.items()} for r in records}
    return [by_step[step] for step in sorted(by_step)]


def save_curves(
    metrics_path: Path, path: Path, evaluation: Mapping[str, Mapping[str, float]] | None = None,
    metric: str | None = None,
) -> Path:
    """Writes the PNG of the run whose metrics are at metrics_path. evaluation: the table of
    the run's evaluation (the trained model's row first, then its baselines); metric: the
    column shown from it, where the table has one."""
    records = read_metrics(metrics_path)
    steps = [r["step"] for r in records]
    rows = {name: row[metric] for name, row in (evaluation or {}).items() if metric in row}
    fig = figure("curves.png", figsize=(4.2 * (3 if rows else 2), 3.2), layout="constrained")
    axes = fig.subplots(1, 3 if rows else 2)
    for ax, key, name in zip(axes[:2], ("loss", "lr"), ("training loss", "learning rate"), strict=True):
        ax.plot(steps, [r[key] for r in records], marker="." if len(records) < 30 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if rows:
        _evaluation(axes[2], rows, metric, steps[-1] if steps else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _evaluation(ax, rows: Mapping[str, float], metric: str, last_step: float) -> None:
    """The trained model's value at the last step, the baselines as horizontal lines."""
    (model, value), *baselines = rows.items()
    for i, (name, base) in enumerate(baselines):
        ax.axhline(base, color=f"C{i + 1}", linestyle="--", label=f"{name}: {base:.4g}")
    ax.plot([last_step], [value], marker="*", markersize=12, linestyle="", color="C0",
            label=f"{model}: {value:.4g}")
    ax.set_xlim(0, max(1.0, last_step) * 1.05)
    ax.set_title(f"held-out {metric}", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
