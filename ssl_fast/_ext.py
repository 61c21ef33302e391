"""Loads ssl_fast._C once and answers which backend serves an op for a tensor.

SSL_FAST_BACKEND selects the backend, read at every call:
  auto   (default) the kernel where one exists, else the PyTorch reference with one warning
  torch  always the PyTorch reference
  ext    always the kernel; a missing kernel is an error
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

try:
    from . import _C  # noqa: F401  (importing it registers the operators)

    LOAD_ERROR: str | None = None
except ImportError as exc:  # a pure-Python install, or a binary built for another torch
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"

LOADED = LOAD_ERROR is None
BACKENDS = ("auto", "torch", "ext")
_warned: set[tuple[str, str]] = set()


class KernelUnavailableError(RuntimeError):
    """SSL_FAST_BACKEND=ext asked for a kernel that this build does not have."""


def backend_mode() -> str:
    mode = os.environ.get("SSL_FAST_BACKEND", "auto").strip().lower() or "auto"
    if mode not in BACKENDS:
        raise ValueError(f"SSL_FAST_BACKEND must be one of {', '.join(BACKENDS)}; got {mode!r}")
    return mode


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ssl_fast::op has a kernel registered for this device type ('cpu', 'cuda')."""
    if not LOADED:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"ssl_fast::{op}", device_type.upper())


def _missing_reason(op: str, device_type: str) -> str | None:
    if not LOADED:
        return f"the extension ssl_fast._C did not load ({LOAD_ERROR})"
    if not has_kernel(op, device_type):
        return f"this build of ssl_fast._C has no {device_type} kernel for {op}"
    return None


def use_kernel(op: str, tensor: torch.Tensor) -> bool:
    """True when the kernel of `op` should run on `tensor`'s device; False for the reference."""
    return _use_kernel(op, tensor.device.type)


def _use_kernel(op: str, device_type: str) -> bool:
    mode = backend_mode()
    if mode == "torch":
        return False
    reason = _missing_reason(op, device_type)
    if reason is None:
        return True
    if mode == "ext":
        raise KernelUnavailableError(f"SSL_FAST_BACKEND=ext, but {reason}")
    key = (op, device_type)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"ssl_fast: {op} runs its PyTorch reference because {reason}", RuntimeWarning, stacklevel=4
        )
    return False


# A compiled graph takes the decision once, when it is traced. This is what
# torch.compiler.assume_constant_result does, without importing torch._dynamo
# (seconds) into every process that imports ssl_fast.
_use_kernel._dynamo_marked_constant = True


def register(
    op: str, fake: Callable, backward: Callable | None = None, setup_context: Callable | None = None
) -> None:
    """The Python half of ssl_fast::op: its fake kernel and, with backward, its autograd.
    Without the extension there is no op to register (a pure-Python install)."""
    if not LOADED:
        return
    torch.library.register_fake(f"ssl_fast::{op}", fake)
    if backward is not None:
        torch.library.register_autograd(f"ssl_fast::{op}", backward, setup_context=setup_context)


def empty_cache() -> None:
    """Frees the large CPU output buffers that ssl_fast keeps for reuse (at most 4 and
    512 MiB; SSL_FAST_HUGEPAGES=0 keeps none)."""
    if LOADED:
        _C.empty_cache()


def build_info() -> dict:
    """How the loaded extension was built; empty when it did not load."""
    return dict(_C.build_info()) if LOADED else {}


def cpu_isa() -> str | None:
    """The instruction set of the CPU kernels that have a path per set, the contrastive tile
    GEMMs and the masking's Philox lanes: "avx512", "avx2" or "baseline" (SSL_FAST_CPU_ISA
    may name a lower one than the CPU has); None without the extension."""
    if not LOADED:
        return None
    try:
        return _C.cpu_isa()
    except RuntimeError as exc:  # an unknown SSL_FAST_CPU_ISA
        raise ValueError(str(exc)) from None
