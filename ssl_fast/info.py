"""What this installation of ssl_fast can run: versions, build flags, kernels per op."""

from __future__ import annotations

import torch

from . import _ext
from .ops import OPS


def backend_info() -> dict:
    """ssl_fast's version, torch/CUDA versions, how ssl_fast._C was built (or why it did not
    load), the backend mode, and for every op whether a CPU and a CUDA kernel is present."""
    from . import __version__  # defined once the package has imported this module

    return {
        "version": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "backend": _ext.backend_mode(),
        "extension": {"loaded": _ext.LOADED, "error": _ext.LOAD_ERROR, **_ext.build_info()},
        "cpu_isa": _ext.cpu_isa(),
        "ops": {op: {"cpu": _ext.has_kernel(op, "cpu"), "cuda": _ext.has_kernel(op, "cuda")} for op in OPS},
    }
