"""The benchmarks as a user runs them: `bench` from any folder, its table and plot, a peer
library that is missing, and the one-line errors for a missing optional dependency."""

from __future__ import annotations

import csv
import importlib.util
import sys

import pytest

from ssl_fast.bench import harness
from ssl_fast.bench.harness import OUT_OF_MEMORY, SKIPPED, Case, OpBench, Recorder
from ssl_fast.cli import main

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_bench_from_another_folder(tmp_path, monkeypatch, capfd):
    """Outputs go to bench-out/ in the working directory, wherever ssl_fast lives."""
    monkeypatch.chdir(tmp_path)
    plot = ["--plot", "nt_xent.png"] if HAS_MATPLOTLIB else []
    status = main(["bench", "nt_xent", "--device", "cpu", "--sizes", "64x16", "--rounds", "1", *plot])
    out, err = capfd.readouterr()
    assert status == 0, err[-3000:]
    table = (tmp_path / "bench-out" / "table.md").read_text()
    assert table in out
    lines = [line.split(" | ") for line in table.splitlines() if line.startswith("| nt_xent |")]
    assert [line[3] for line in lines] == ["forward", "backward", "full"]
    assert all(float(line[4]) > 0 and float(line[5]) > 0 for line in lines)  # torch ms, ssl_fast ms
    assert "- nt_xent, inf_cl (64x16): inf_cl runs on CUDA only" in table
    rows = list(csv.DictReader((tmp_path / "bench-out" / "results.csv").open()))
    assert {(r["provider"], r["metric"]) for r in rows} >= {
        ("torch", "time_ms_median"), ("ssl_fast", "peak_extra_mb"), ("inf_cl", SKIPPED)}
    if HAS_MATPLOTLIB:
        assert (tmp_path / "nt_xent.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("op", ["siglip", "info_nce"])
def test_bench_against_open_clip(op, tmp_path, monkeypatch, capfd):
    """The providers of the two-tower losses, open_clip's included where it is installed, run
    end to end."""
    monkeypatch.chdir(tmp_path)
    status = main(["bench", op, "--device", "cpu", "--sizes", "40x8", "--rounds", "1", "--no-memory"])
    out, err = capfd.readouterr()
    assert status == 0, err[-3000:]
    rows = list(csv.DictReader((tmp_path / "bench-out" / "results.csv").open()))
    measured = {r["provider"] for r in rows if r["metric"] == "time_ms_median"}
    assert {"torch", "ssl_fast"} <= measured
    has_open_clip = importlib.util.find_spec("open_clip") is not None
    assert ("open_clip" in measured) == has_open_clip


def test_plot_without_matplotlib_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    status, out, err = run_main(["bench", "nt_xent", "--plot", "f.png"], capsys)
    assert status == 2 and out == ""
    assert err == ("ssl_fast: error: --plot needs matplotlib, which is not installed "
                   "(pip install 'ssl_fast[plot]')\n")
    assert not (tmp_path / "bench-out").exists()  # refused before any benchmark ran


def test_bench_without_pytest_benchmark_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pytest_benchmark", None)
    status, out, err = run_main(["bench", "mse"], capsys)
    assert status == 2 and out == ""
    assert err == ("ssl_fast: error: bench needs pytest-benchmark, which is not installed "
                   "(pip install 'ssl_fast[bench]')\n")


def _case(provider: str, shape: tuple[int, ...] = (4, 4)) -> Case:
    return Case("op", provider, "full", shape, "float32", "cpu", "ssl_fast.bench.regression")


@pytest.mark.parametrize(
    ("ops", "sizes", "message"),
    [
        (["mask_tokens", "random_masking"], "16x64", "random_masking takes shapes of 3 dimensions, such as "
         "256x196x768; got 16x64"),
        (["nt_xent"], "1024x128,64", "nt_xent takes shapes of 2 dimensions, such as 1024x128; got 64"),
    ],
)
def test_sizes_of_the_wrong_rank_are_a_usage_error(ops, sizes, message, capsys):
    pytest.importorskip("pytest_benchmark")
    status, out, err = run_main(["bench", *ops, "--sizes", sizes], capsys)
    assert status == 2 and out == ""
    assert err == f"ssl_fast: error: --sizes: {message}\n"


def test_a_missing_peer_is_a_skipped_row(tmp_path, monkeypatch):
    (tmp_path / "peer_with_a_missing_dependency.py").write_text("import ssl_fast_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bench = OpBench("op", {"torch": "torch.nn.functional:mse_loss", "absent": "x:f", "broken": "x:f"},
                    {"cpu": (((4, 4), "float32"),)},
                    requires={"absent": "ssl_fast_no_such_peer", "broken": "peer_with_a_missing_dependency"})
    assert harness.why_not_run(bench, _case("torch")) is None
    assert harness.why_not_run(bench, _case("absent")) == (SKIPPED, "ssl_fast_no_such_peer is not installed")
    assert harness.why_not_run(bench, _case("broken")) == (
        SKIPPED, "peer_with_a_missing_dependency cannot be imported (No module named "
        "'ssl_fast_no_such_dependency')")

    recorder = Recorder("cpu", tmp_path / "results.csv")
    recorder.add(_case("torch"), "time_ms_median", 2.0)
    recorder.add(_case("absent"), SKIPPED, "ssl_fast_no_such_peer is not installed")
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["provider"], r["metric"], r["value"]) for r in rows] == [
        ("torch", "time_ms_median", "2"), ("absent", SKIPPED, "ssl_fast_no_such_peer is not installed")]
    assert harness.markdown_table(recorder.rows).splitlines()[2] == "| op | 4x4 | float32 | full | 2.00 |"
    assert harness.not_measured(recorder.rows) == [
        "- op, absent (4x4): ssl_fast_no_such_peer is not installed"]


def test_out_of_memory_marks_the_table_and_the_plot(tmp_path):
    recorder = Recorder("cpu", tmp_path / "results.csv")
    for n, fits in ((64, True), (128, True), (256, False)):
        for provider in ("torch", "ssl_fast"):
            case = _case(provider, (n, 8))
            if provider == "torch" and not fits:
                recorder.add(case, OUT_OF_MEMORY, "would need 9 GiB")
            else:
                recorder.add(case, "time_ms_median", n / 10)
                recorder.add(case, "peak_extra_mb", n / 100)
    table = harness.markdown_table(recorder.rows)
    assert "| op | 256x8 | float32 | full | OOM | 25.6 | - | - | 2.6 |" in table
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib is not installed")
    from ssl_fast.bench.plot import plot

    fig = plot(recorder.rows, recorder.families, recorder.header())
    time_ax, memory_ax = fig.axes
    for ax in (time_ax, memory_ax):
        assert [t.get_text() for t in ax.texts] == ["largest run: 128x8\n256x8: out of memory"]
        assert sorted(line.get_label() for line in ax.get_lines()) == ["ssl_fast", "torch"]
        assert ax.get_xscale() == ax.get_yscale() == "log"
    assert time_ax.get_title() == "regression: forward + backward"


def test_family_peers_past_the_budget_are_out_of_memory():
    """SupCon's and DCL's materialised peers grow as (2N)^2: those past the CPU budget are
    recorded as out of memory before they run; ssl_fast's own rows always run."""
    from ssl_fast.bench.contrastive import BENCHES

    benches = {b.name: b for b in BENCHES}

    def why(op, provider, n):
        case = Case(op, provider, "full", (n, 128), "float32", "cpu", "ssl_fast.bench.contrastive")
        return harness.why_not_run(benches[op], case)

    assert why("sup_con", "pytorch-metric-learning", 8192) == (
        OUT_OF_MEMORY, "pytorch-metric-learning would need about 12 GiB (from 46 bytes per element of the "
        "16384x16384 matrix in fp32), above the 8 GiB budget")
    assert why("sup_con", "pytorch-metric-learning", 4096) in (None, (SKIPPED, "pytorch_metric_learning is "
                                                                        "not installed"))
    for op in ("sup_con", "dcl"):
        assert why(op, "ssl_fast", 1 << 20) is None and why(op, "ssl_fast-NTXent", 1 << 20) is None
