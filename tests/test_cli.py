"""The command line: `python -m ssl_fast ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_fast
from ssl_fast.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
OPS = ("smooth_l1_loss", "mse_loss")


@pytest.fixture(autouse=True)
def auto_backend(monkeypatch):
    monkeypatch.delenv("SSL_FAST_BACKEND", raising=False)


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """main() in-process, as `python -m ssl_fast` runs it (`raise SystemExit(main())`)."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors and --help
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_info_table():
    """The one test that pays for a fresh interpreter: the real `python -m` entry point."""
    env = {k: v for k, v in os.environ.items() if k != "SSL_FAST_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_fast", "info"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line.strip()}
    assert rows["op"] == ["cpu", "cuda"]
    for op in OPS:
        assert rows[op][0] == "yes" and rows[op][1] in ("yes", "no")
    assert rows["backend"][0] == "auto"
    assert rows["ssl_fast._C"][0] == "built"
    assert rows["ssl_fast"] == [ssl_fast.__version__]


def test_info_json(capsys):
    status, out, err = run_main(["info", "--json"], capsys)
    assert status == 0, err
    info = json.loads(out)
    assert info["extension"]["loaded"] is True
    assert info["version"] == ssl_fast.__version__
    assert info["backend"] == "auto"
    for op in OPS:
        assert info["ops"][op]["cpu"] is True


@pytest.mark.parametrize("argv", [["frobnicate"], ["info", "--frobnicate"]], ids=" ".join)
def test_usage_errors(argv, capsys):
    status, out, err = run_main(argv, capsys)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err


def test_bad_backend_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("SSL_FAST_BACKEND", "gpu")
    status, out, err = run_main(["info"], capsys)
    assert status == 2
    assert err.splitlines() == [
        "ssl_fast: error: SSL_FAST_BACKEND must be one of auto, torch, ext; got 'gpu'"
    ]


def test_bench_unknown_op(capsys):
    status, out, err = run_main(["bench", "nosuchop"], capsys)
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "nosuchop" in lines[0]


@pytest.mark.parametrize(("text", "steps", "seconds"), [
    ("500", 500, 0), ("90s", 0, 90), ("1.5min", 0, 90), ("1h", 0, 3600), ("0", 0, 0), ("0s", 0, 0),
])
def test_checkpoint_interval(text, steps, seconds):
    args = build_parser().parse_args(["train", "forecast", "--checkpoint-every", text])
    assert args.checkpoint_every == {"checkpoint_every": steps, "checkpoint_seconds": seconds}


@pytest.mark.parametrize("text", ["5x", "-1", "1.5", "min", "2 min"])
def test_bad_checkpoint_interval(text, capsys):
    status, out, err = run_main(["train", "forecast", "--checkpoint-every", text], capsys)
    assert status == 2 and out == ""
    assert err.startswith("ssl_fast: error: argument --checkpoint-every: must be a number of steps or a time "
                          f"such as 90s, 10min or 1h, got {text!r}"), err
