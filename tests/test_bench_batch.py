"""The batch-size benchmark: its search, and `bench simclr_batch` end to end on a tiny budget."""

from __future__ import annotations

import csv

import pytest

from ssl_fast.cli import main


@pytest.fixture
def harness():
    from ssl_fast.bench import harness

    return harness


def test_largest_batch_doubles_then_bisects(harness):
    probes = []

    def peak(batch: int) -> float | None:  # linear, as a step's memory; None: out of memory
        probes.append(batch)
        return None if batch > 1000 else 100.0 + 10.0 * batch

    batch, found_peak = harness.largest_batch(peak, budget=5000.0, resolution=0.05)
    assert probes[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert 0.95 * 490 <= batch <= 490 and found_peak == peak(batch)
    assert harness.largest_batch(peak, budget=50.0) == (0, 0.0)
    assert harness.largest_batch(peak, budget=1e9)[0] >= 0.95 * 1000  # bounded by running out of memory
    assert 0.95 * 20 <= harness.largest_batch(peak, budget=300.0, start=64)[0] <= 20  # bisected down


@pytest.mark.slow
def test_bench_simclr_batch_command(tmp_path, capsys):
    table, results = tmp_path / "table.md", tmp_path / "results.csv"
    argv = ["bench", "simclr_batch", "--device", "cpu", "--sizes", "6M", "--rounds", "1",
            "--table", str(table), "--csv", str(results)]
    assert main(argv) == 0, capsys.readouterr().err
    line = next(row for row in table.read_text().splitlines() if row.startswith("| simclr_batch"))
    assert line.split(" | ")[2] == "6"  # the budget, MiB
    rows = list(csv.DictReader(results.open()))
    values = {(r["provider"], r["metric"]): float(r["value"]) for r in rows}
    full, chunked = values[("full", "max_batch")], values[("chunk64", "max_batch")]
    assert 1 <= full < chunked
    for provider in ("full", "chunk64"):
        assert values[(provider, "peak_mb")] <= 6
        assert values[(provider, "time_batch")] == full
        assert values[(provider, "ms_per_sample")] > 0


def test_a_run_whose_cases_all_skip(tmp_path, capsys):
    table = tmp_path / "table.md"
    argv = ["bench", "simclr_batch", "--device", "cpu", "--no-memory", "--table", str(table),
            "--csv", str(tmp_path / "results.csv")]
    assert main(argv) == 0
    assert "every case was skipped" in capsys.readouterr().out and not table.exists()
