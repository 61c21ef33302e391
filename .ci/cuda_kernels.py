"""Fails unless every op of a family with a CUDA source (csrc/<family>/cuda.cu, the one that
registers its CUDA kernels) has a CUDA kernel in the ssl_fast._C that Python imports; no GPU
is needed to ask. The family's other CUDA sources (contrastive/fused.cu, kernels that
contrastive/cuda.cu dispatches to) register nothing."""

import importlib
import sys
from pathlib import Path

from ssl_fast import _ext

csrc = Path(__file__).resolve().parents[1] / "csrc"
families = sorted(
    {p.parent.name for p in csrc.glob("*/*.cu") if "TORCH_LIBRARY_IMPL(ssl_fast, CUDA" in p.read_text()}
)
missing = [
    op
    for family in families
    for op in importlib.import_module(f"ssl_fast.ops.{family}").OPS
    if not _ext.has_kernel(op, "cuda")
]
if not _ext.LOADED or missing:
    reason = _ext.LOAD_ERROR or "built without them"
    sys.exit(f"no CUDA kernel for {', '.join(missing) or 'any op'} ({reason})")
print(f"CUDA kernels present for every op of {', '.join(families)}")
