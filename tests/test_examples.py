"""The examples run as a user runs them: a fresh interpreter, a few steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import idx_folder

REPO = Path(__file__).resolve().parents[1]


def _run_example(*args: str) -> str:
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "mnist_autoencoder.py"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_mnist_autoencoder_on_the_bundled_digits():
    pytest.importorskip("sklearn")
    out = _run_example("--steps", "3")
    assert "widths 64-48-32-16" in out and "test MSE" in out and "after 3 steps" in out


def test_mnist_autoencoder_on_an_idx_folder(tmp_path):
    idx_folder(tmp_path, n_train=20, n_test=6, size=(28, 28))
    out = _run_example("--data", str(tmp_path), "--steps", "2", "--batch-size", "8")
    assert out.startswith("20 training and 6 test images of 784 pixels; widths 784-512-256-128")
    assert "after 2 steps" in out
