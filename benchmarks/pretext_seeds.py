"""The pretext tasks' held-out evaluations over several seeds, as one markdown table.

    python benchmarks/pretext_seeds.py [--seeds 0 1 2] [--tasks simclr forecast autoencoder ...]
                                       [--variant vae ...] [--steps N] [--holdout validation] [--out DIR]

Runs `python -m ssl_fast train TASK --seed S --quiet --json` for each task and seed, with the
step counts of `make demo-all` unless --steps says otherwise, in --out (default: a temporary
folder, removed afterwards). Then prints, per task, per row of its evaluation (the trained model
first, then its baselines) and per metric: the mean and sample standard deviation over the
seeds, their range, and for each baseline whether the model's mean beats it (with the number of
seeds on which it does). Each seed is its own run: its initialisation, batches, augmentations
and (all tasks but forecast, whose split is in time order) its train/test split.

A task NAME:VARIANT runs `train NAME --variant VARIANT` (`autoencoder:vae`); --variant V adds
`autoencoder:V` for each V. --holdout validation evaluates on a validation part carved out of
the training data instead of the test part (all tasks but mlm): the way to compare
hyper-parameters without reading the test part.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Steps of each task in `make demo-all`.
DEMO_STEPS = {"autoencoder": 1000, "forecast": 500, "simclr": 300, "mlm": 300}
DEFAULT_TASKS = (  # a variant is one more entry: "autoencoder:vae"
    "simclr", "forecast", "mlm", "autoencoder", "autoencoder:sparse", "autoencoder:topk",
    "autoencoder:denoising", "autoencoder:vae",
)
# Which way each evaluation metric improves; a metric missing here gets no verdict.
HIGHER_IS_BETTER = {
    "knn_top1": True, "linear_probe": True, "masked_token_accuracy": True,
    "reconstruction_mse": False, "mse": False, "mae": False, "perplexity": False,
    "denoised_mse": False, "neg_elbo_nats": False,
}


@dataclass(frozen=True)
class TaskSpec:
    """A task as named on the command line: `simclr`, or `autoencoder:vae` for a variant."""

    name: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        name, colon, variant = text.partition(":")
        if name not in DEMO_STEPS or (colon and not variant):
            raise ValueError(
                f"unknown task {text!r}: NAME or NAME:VARIANT, NAME one of {', '.join(DEMO_STEPS)}"
            )
        return cls(name, variant or None)

    def __str__(self) -> str:
        return self.name if self.variant is None else f"{self.name}:{self.variant}"

    def train_args(self) -> list[str]:
        return ["train", self.name] + ([] if self.variant is None else ["--variant", self.variant])


@dataclass
class Run:
    """One task trained with one seed: its evaluation table, training and wall seconds."""

    table: dict[str, dict[str, float]]
    train_seconds: float
    wall_seconds: float


def run_task(task: TaskSpec, seed: int, steps: int, holdout: str, out: Path) -> Run:
    """Trains and evaluates `task` once in a subprocess; RuntimeError with its stderr if it fails."""
    command = [sys.executable, "-m", "ssl_fast", *task.train_args(), "--steps", str(steps),
               "--seed", str(seed), "--out", str(out), "--quiet", "--json", "--no-tensorboard",
               "--checkpoint-every", "0"] + (["--holdout", holdout] if holdout != "test" else [])
    # The ssl_fast of this checkout.
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed (exit status {done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(result["evaluation"], result["train_seconds"], wall)


def _decimals(value: float, digits: int = 4) -> int:
    """Decimals that give `value` `digits` significant digits (at least 0)."""
    if value == 0 or not math.isfinite(value):
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def _verdict(metric: str, model: list[float], baseline: list[float]) -> str:
    """Whether the model's mean beats the baseline's on `metric`, and on how many seeds."""
    if metric not in HIGHER_IS_BETTER:
        return "n/a (direction unknown)"
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    wins = sum(sign * (m - b) > 0 for m, b in zip(model, baseline, strict=True))
    better = sign * (statistics.fmean(model) - statistics.fmean(baseline)) > 0
    return f"{'yes' if better else 'no'} ({wins}/{len(model)} seeds)"


def task_table(task: TaskSpec, runs: list[Run]) -> list[str]:
    """The markdown rows of one task: each row of its evaluation and metric, over the runs."""
    rows = list(runs[0].table)
    model = rows[0]  # the trained model comes first, its baselines after it
    lines = []
    for row in rows:
        for metric in runs[0].table[row]:
            values = [run.table[row][metric] for run in runs]
            d = _decimals(statistics.fmean(values))
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            if row == model:
                verdict = "(model)"
            elif metric in runs[0].table[model]:
                verdict = _verdict(metric, [run.table[model][metric] for run in runs], values)
            else:
                verdict = ""
            better = {True: "higher", False: "lower", None: "?"}[HIGHER_IS_BETTER.get(metric)]
            lines.append(f"| {task} | {row} | {metric} ({better}) | {statistics.fmean(values):.{d}f} ± "
                         f"{spread:.{d}f} | {min(values):.{d}f} – {max(values):.{d}f} | {verdict} |")
    return lines


def report(
    results: dict[TaskSpec, list[Run]], seeds: list[int], steps: dict[TaskSpec, int], holdout: str
) -> str:
    """The markdown table of every task, then their step counts and times."""
    lines = [
        f"Held-out part: {holdout}; seeds {', '.join(map(str, seeds))}; mean ± sample standard deviation "
        "over the seeds, and their min – max. Model better: the model's mean beats the baseline's on the "
        "metric (and on how many seeds it does).",
        "",
        "| task | row | metric (better) | mean ± std | min – max | model better |",
        "|---|---|---|---|---|---|",
    ]
    for task, runs in results.items():
        lines += task_table(task, runs)
    lines += ["", "| task | steps | train s (mean ± std) | wall s per run (mean) |", "|---|---|---|---|"]
    for task, runs in results.items():
        train = [run.train_seconds for run in runs]
        spread = statistics.stdev(train) if len(train) > 1 else 0.0
        lines.append(f"| {task} | {steps[task]} | {statistics.fmean(train):.1f} ± {spread:.1f} | "
                     f"{statistics.fmean(run.wall_seconds for run in runs):.1f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                        help=f"NAME or NAME:VARIANT, NAME one of {', '.join(DEMO_STEPS)} (default: "
                        f"{' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--variant", nargs="+", default=[],
                        help="autoencoder variants: adds the task autoencoder:V for each V")
    parser.add_argument("--steps", type=int, help="steps of every task (default: those of make demo-all)")
    parser.add_argument("--holdout", choices=("test", "validation"), default="test",
                        help="the part evaluated on (validation: for choosing hyper-parameters)")
    parser.add_argument("--out", type=Path, help="where the runs are written (default: a temporary folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = [*args.tasks, *(f"autoencoder:{variant}" for variant in args.variant)]
        tasks = list(dict.fromkeys(TaskSpec.parse(name) for name in names))
    except ValueError as exc:
        print(f"pretext_seeds: error: {exc}", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print(f"pretext_seeds: error: --steps must be positive, got {args.steps}", file=sys.stderr)
        return 2
    steps = {task: args.steps or DEMO_STEPS[task.name] for task in tasks}
    with tempfile.TemporaryDirectory(prefix="pretext_seeds_") as scratch:
        out = args.out or Path(scratch)
        results = {}
        try:
            for task in tasks:
                results[task] = []
                for seed in args.seeds:
                    folder = out / str(task).replace(":", "-") / f"seed{seed}"
                    results[task].append(run_task(task, seed, steps[task], args.holdout, folder))
                    print(f"{task} seed {seed}: done", file=sys.stderr, flush=True)
        except RuntimeError as exc:
            print(f"pretext_seeds: error: {exc}", file=sys.stderr)
            return 1
    print(report(results, args.seeds, steps, args.holdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
