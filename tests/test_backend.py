"""Backend selection (SSL_FAST_BACKEND), the fallback warning, backend_info()."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import ssl_fast
from ssl_fast import _ext, reference

REPO = Path(__file__).resolve().parents[1]
OPS = ("smooth_l1_loss", "mse_loss")


@pytest.fixture(autouse=True)
def fresh_backend_state(monkeypatch):
    """Each test starts in auto mode with no fallback warning given yet."""
    monkeypatch.delenv("SSL_FAST_BACKEND", raising=False)
    monkeypatch.setattr(_ext, "_warned", set())


@pytest.fixture
def spies(monkeypatch):
    """Counts calls of the PyTorch references, which still compute the result."""
    calls = {op: 0 for op in OPS}

    def spy(op):
        real = getattr(reference, op)

        def wrapper(*args, **kwargs):
            calls[op] += 1
            return real(*args, **kwargs)

        return wrapper

    for op in OPS:
        monkeypatch.setattr(reference, op, spy(op))
    return calls


@pytest.fixture
def no_cpu_kernel(monkeypatch):
    monkeypatch.setattr(_ext, "has_kernel", lambda op, device_type: False)


def call_both() -> list[torch.Tensor]:
    x, y = torch.linspace(-2, 2, 12).reshape(3, 4), torch.zeros(3, 4)
    return [ssl_fast.smooth_l1_loss(x, y, beta=0.5), ssl_fast.mse_loss(x, y, mask=torch.ones(3))]


def expected_both() -> list[torch.Tensor]:
    x, y = torch.linspace(-2, 2, 12).reshape(3, 4), torch.zeros(3, 4)
    return [torch.nn.functional.smooth_l1_loss(x, y, beta=0.5), torch.nn.functional.mse_loss(x, y)]


def test_backend_info():
    info = ssl_fast.backend_info()
    assert set(info) == {"version", "torch", "torch_cuda", "cuda_available", "backend", "extension",
                         "cpu_isa", "ops"}
    assert info["version"] == ssl_fast.__version__
    assert info["cpu_isa"] in ("avx512", "avx2", "baseline")
    assert info["torch"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["backend"] == "auto"
    assert info["extension"]["loaded"] is True and info["extension"]["error"] is None
    assert {"cuda", "cuda_archs", "torch", "debug", "compiler"} <= set(info["extension"])
    assert set(OPS) <= set(info["ops"])
    for op in OPS:
        assert info["ops"][op]["cpu"] is True
        assert isinstance(info["ops"][op]["cuda"], bool)


@pytest.mark.parametrize("mode", ["torch", "ext", "auto"])
def test_backend_info_reports_mode(mode, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", mode)
    assert ssl_fast.backend_info()["backend"] == mode


@pytest.mark.parametrize(
    "value, reference_calls",
    [("auto", 0), ("ext", 0), ("torch", 1), (" TORCH ", 1), ("Torch", 1)],
)
def test_backend_choice(value, reference_calls, spies, monkeypatch):
    """auto and ext run the kernel, torch forces the reference; none of them warns
    (forcing the reference is not a fallback)."""
    monkeypatch.setenv("SSL_FAST_BACKEND", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = call_both()
    assert spies == {"smooth_l1_loss": reference_calls, "mse_loss": reference_calls}
    for got, want in zip(results, expected_both(), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("value", ["gpu", "kernel", "1"])
def test_invalid_backend(value, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", value)
    with pytest.raises(ValueError, match=rf"SSL_FAST_BACKEND must be one of auto, torch, ext; got '{value}'"):
        ssl_fast.mse_loss(torch.zeros(2), torch.zeros(2))


def test_empty_backend_is_auto(spies, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", "")
    call_both()
    assert spies == {"smooth_l1_loss": 0, "mse_loss": 0}


def test_missing_kernel_warns_once_per_op(spies, no_cpu_kernel):
    with pytest.warns(RuntimeWarning) as record:
        for _ in range(3):
            results = call_both()
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 2, messages
    for op, message in zip(OPS, messages, strict=True):
        assert (
            message == f"ssl_fast: {op} runs its PyTorch reference because this build of ssl_fast._C "
            f"has no cpu kernel for {op}"
        )
    assert record[0].filename == __file__  # stacklevel points at the caller
    assert spies == {"smooth_l1_loss": 3, "mse_loss": 3}
    for got, want in zip(results, expected_both(), strict=True):
        torch.testing.assert_close(got, want)


def test_extension_not_loaded_warns_with_the_reason(spies, monkeypatch):
    monkeypatch.setattr(_ext, "LOADED", False)
    monkeypatch.setattr(_ext, "LOAD_ERROR", "ImportError: libc10.so: cannot open shared object file")
    with pytest.warns(
        RuntimeWarning,
        match=r"smooth_l1_loss runs its PyTorch reference because the extension "
        r"ssl_fast._C did not load \(ImportError: libc10.so: cannot open shared object file\)",
    ):
        ssl_fast.smooth_l1_loss(torch.zeros(2), torch.ones(2))
    assert spies["smooth_l1_loss"] == 1
    assert ssl_fast.backend_info()["ops"]["mse_loss"] == {"cpu": False, "cuda": False}


def test_missing_kernel_with_ext_backend_is_an_error(spies, no_cpu_kernel, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for op in OPS:
            with pytest.raises(
                _ext.KernelUnavailableError,
                match=rf"SSL_FAST_BACKEND=ext, but this build of ssl_fast._C has no cpu kernel for {op}",
            ):
                getattr(ssl_fast, op)(torch.zeros(2), torch.ones(2))
    assert issubclass(_ext.KernelUnavailableError, RuntimeError)
    assert spies == {"smooth_l1_loss": 0, "mse_loss": 0}


def test_missing_kernel_with_torch_backend_is_silent(spies, no_cpu_kernel, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call_both()
    assert spies == {"smooth_l1_loss": 1, "mse_loss": 1}


PURE_PYTHON = textwrap.dedent(
    """
    import importlib.abc, json, sys, warnings

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ssl_fast._C":
                raise ImportError("ssl_fast._C blocked by the test")

    sys.meta_path.insert(0, Block())
    import torch
    import ssl_fast

    x = torch.linspace(-2, 2, 12, requires_grad=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            loss = ssl_fast.smooth_l1_loss(x, torch.zeros(12), beta=0.5)
            loss.backward()
    expected = torch.nn.functional.smooth_l1_loss(x.detach(), torch.zeros(12), beta=0.5)
    print(json.dumps({
        "close": bool(torch.allclose(loss, expected)),
        "grad": x.grad is not None,
        "warnings": [str(w.message) for w in record if w.category is RuntimeWarning],
        "info": ssl_fast.backend_info(),
    }))
    """
)


def test_pure_python_install():
    """Without ssl_fast._C (as with SSL_FAST_NO_EXT=1) the losses run their reference."""
    proc = subprocess.run(
        [sys.executable, "-c", PURE_PYTHON],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SSL_FAST_BACKEND": "auto"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["close"] and out["grad"]
    assert out["warnings"] == [
        "ssl_fast: smooth_l1_loss runs its PyTorch reference because the extension ssl_fast._C did not "
        "load (ImportError: ssl_fast._C blocked by the test)"
    ]
    info = out["info"]
    assert info["extension"] == {"loaded": False, "error": "ImportError: ssl_fast._C blocked by the test"}
    assert info["ops"]["smooth_l1_loss"] == {"cpu": False, "cuda": False}


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.M)[1]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
@pytest.mark.skipif(os.environ.get("SSL_FAST_HUGEPAGES") == "0", reason="no buffer cache")
def test_empty_cache_returns_kept_buffers():
    """A freed 16 MiB gradient is kept for the next call of its size (and reused, with
    the right values), until empty_cache() returns it to the system."""
    x, y = torch.randn(1 << 22), torch.randn(1 << 22)
    _, grad = torch.ops.ssl_fast.mse_loss(x, y, 1, None, True)
    first = grad.data_ptr()
    del grad
    _, grad = torch.ops.ssl_fast.mse_loss(x, y, 1, None, True)
    assert grad.data_ptr() == first
    torch.testing.assert_close(grad, 2 * (x - y) / x.numel())
    del grad
    before = _resident_mib()
    ssl_fast.empty_cache()
    assert before - _resident_mib() > 15
