"""benchmarks/pretext_seeds.py: the seeds' table of a task end to end (2 steps, 2 seeds), the
verdicts' directions, and task names with variants."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pretext_seeds.py"


@pytest.fixture(scope="module")
def seeds():
    """The script as a module (registered while in use: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("pretext_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_table_of_two_seeds(tmp_path):
    pytest.importorskip("sklearn")
    command = [sys.executable, str(SCRIPT), "--seeds", "0", "1", "--tasks", "forecast", "--steps", "2",
               "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "| task | row | metric (better) | mean ± std | min – max | model better |" in lines
    rows = [line for line in lines if line.startswith("| forecast | ") and line.count("|") == 7]
    table = {tuple(cell.strip() for cell in row.split("|")[2:4]): row for row in rows}
    assert set(table) == {(row, f"{metric} (lower)") for row in ("model", "last_value", "ridge_on_lags")
                          for metric in ("mse", "mae")}
    assert table["model", "mae (lower)"].endswith("| (model) |")
    assert " seeds) |" in table["ridge_on_lags", "mae (lower)"]
    assert any(line.startswith("| forecast | 2 | ") for line in lines)  # the steps and times
    for seed in (0, 1):
        assert (tmp_path / "forecast" / f"seed{seed}" / "forecast" / "eval.json").is_file()


def test_verdicts_follow_each_metrics_direction(seeds):
    assert seeds._verdict("knn_top1", [0.9, 0.8], [0.85, 0.7]) == "yes (2/2 seeds)"
    assert seeds._verdict("mae", [10.0, 30.0], [20.0, 15.0]) == "no (1/2 seeds)"
    assert seeds._verdict("mae", [1.0, 1.0], [1.0, 1.0]) == "no (0/2 seeds)"  # a tie is no win
    assert seeds._verdict("kl", [1.0], [2.0]) == "n/a (direction unknown)"


def test_task_names_and_variants(seeds, capsys):
    vae = seeds.TaskSpec.parse("autoencoder:vae")
    assert vae.train_args() == ["train", "autoencoder", "--variant", "vae"] and str(vae) == "autoencoder:vae"
    assert seeds.TaskSpec.parse("simclr").train_args() == ["train", "simclr"]
    for bad in ("gan", "autoencoder:"):
        with pytest.raises(ValueError, match="unknown task"):
            seeds.TaskSpec.parse(bad)
    assert seeds.main(["--tasks", "gan"]) == 2
    assert "unknown task 'gan'" in capsys.readouterr().err
