"""The pytest plugin of the harness: --bench-* options, case parametrisation, the
`measure` fixtures, and the markdown table (and plot) at the end of the session.

A test that takes `case` is parametrised with the cases of the BENCHES of the module that
defines it (a family module of ssl_fast.bench), wherever it is collected from:

    pytest benchmarks/ --benchmark-only [--bench-device cuda] [--bench-sizes 4096x4096]
        [--bench-dtypes float32,bf16] [--bench-rounds 10] [--bench-csv PATH] [--bench-no-memory]
        [--bench-plot PNG]
    pytest -p ssl_fast.bench.plugin --benchmark-only SITE-PACKAGES/ssl_fast/bench/contrastive.py

(benchmarks/conftest.py loads the plugin; `python -m ssl_fast bench` passes -p.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from .._plotting import require
from .harness import (
    DEFAULT_CSV,
    DEFAULT_TABLE,
    BenchSession,
    Case,
    Recorder,
    Settings,
    build_cases,
    parse_dtypes,
    parse_shapes,
    write_table,
)

_SESSION = pytest.StashKey[BenchSession]()
_DEFAULT_ROUNDS = {"cpu": 10, "cuda": 100}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ssl_fast benchmarks")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default=None,
                    help="device of every case (default: cuda if available, else cpu)")
    group.addoption("--bench-sizes", default=None, metavar="SHAPES",
                    help="shapes instead of each op's defaults, e.g. 4096x4096,41x401x127,16M")
    group.addoption("--bench-dtypes", default=None, metavar="DTYPES",
                    help="dtypes instead of each op's defaults, e.g. float32,bf16")
    group.addoption("--bench-rounds", type=int, default=None, metavar="N",
                    help=f"timed rounds per case (default: {_DEFAULT_ROUNDS}); warm-up: max(2, N/5)")
    group.addoption("--bench-csv", type=Path, default=DEFAULT_CSV, metavar="PATH",
                    help=f"CSV the rows are appended to (default: {DEFAULT_CSV})")
    group.addoption("--bench-table", type=Path, default=DEFAULT_TABLE, metavar="PATH",
                    help=f"markdown table of the session (default: {DEFAULT_TABLE})")
    group.addoption("--bench-plot", type=Path, default=None, metavar="PNG",
                    help="also plot time and peak memory against size (needs matplotlib)")
    group.addoption("--bench-no-memory", action="store_true",
                    help="skip the peak-memory measurements (one fresh process per CPU case)")


def _settings(config: pytest.Config) -> Settings:
    device = config.getoption("bench_device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: no CUDA GPU is available to this torch")
    rounds = config.getoption("bench_rounds")
    rounds = _DEFAULT_ROUNDS[device] if rounds is None else rounds
    if rounds < 1:
        raise pytest.UsageError(f"--bench-rounds must be at least 1, got {rounds}")
    sizes, dtypes = config.getoption("bench_sizes"), config.getoption("bench_dtypes")
    try:
        shapes = parse_shapes(sizes) if sizes else None
        dtype_names = parse_dtypes(dtypes) if dtypes else None
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    plot = config.getoption("bench_plot")
    if plot is not None:
        try:
            require("--bench-plot")
        except ImportError as exc:
            raise pytest.UsageError(str(exc)) from None
    return Settings(
        device=device, shapes=shapes, dtypes=dtype_names, rounds=rounds,
        memory=not config.getoption("bench_no_memory"),
        csv_path=config.getoption("bench_csv").resolve(),
        table_path=config.getoption("bench_table").resolve(),
        plot_path=plot.resolve() if plot is not None else None,
    )


def pytest_configure(config: pytest.Config) -> None:
    settings = _settings(config)
    config.stash[_SESSION] = BenchSession(settings, Recorder(settings.device, settings.csv_path))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        settings = metafunc.config.stash[_SESSION].settings
        family = sys.modules[metafunc.function.__module__]  # also where a thin file imports the test from
        cases = build_cases(family.BENCHES, family.__name__, settings)
        metafunc.parametrize("case", cases, ids=[case.id for case in cases])


@pytest.fixture
def measure(benchmark: BenchmarkFixture, request: pytest.FixtureRequest) -> Callable[[Case], None]:
    """measure(case): times the case, measures its memory, records the rows."""
    return partial(request.config.stash[_SESSION].measure, benchmark)


@pytest.fixture
def measure_batch(benchmark: BenchmarkFixture, request: pytest.FixtureRequest) -> Callable[[Case], None]:
    """measure_batch(case): the largest batch of a training step under the case's memory
    budget, its memory and time per sample, the rows recorded."""
    return partial(request.config.stash[_SESSION].measure_batch, benchmark)


def pytest_sessionfinish(session: pytest.Session) -> None:
    bench = session.config.stash[_SESSION]
    if not bench.recorder.measured:
        return
    write_table(bench)
    if bench.settings.plot_path is not None:
        from .plot import plot_rows

        plot_rows(bench.recorder.rows, bench.recorder.families, bench.settings.plot_path,
                  bench.recorder.header())


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    bench = config.stash[_SESSION]
    if bench.recorder.measured and not config.getoption("benchmark_quiet"):
        terminalreporter.write_sep("-", "ssl_fast benchmark table")
        terminalreporter.write_line(bench.settings.table_path.read_text())
