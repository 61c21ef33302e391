"""Shared fixtures and the accuracy criterion of the ssl_fast tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

# Test ids are "cpu" / "cuda", so that `-k cuda` selects the GPU tests.
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]

FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# The slack of the accuracy criterion (assert_accurate), per dtype: ssl_fast's largest error
# against float64 may exceed torch's (in the same dtype) by TOL[dtype] times the largest
# |float64 result|, plus one subnormal step. For the 16-bit types that is one rounding step:
# ssl_fast rounds an fp32 result once, yet may land on the other side of torch's rounding.
# For float32 and float64 it is summation-order noise over millions of elements.
TOL = {
    torch.float64: 1e-12,
    torch.float32: 2e-6,
    torch.float16: 2.0**-10,
    torch.bfloat16: 2.0**-7,
}


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator: draw on the CPU, then move to the device under test."""
    return torch.Generator().manual_seed(1234)


def randn(*shape: int, gen: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Standard normal values drawn in float64 on the CPU (the same values for every device),
    then rounded to `dtype`."""
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def assert_accurate(
    ours: torch.Tensor, theirs: torch.Tensor, ref: torch.Tensor, what: str = "", floor: float = 0.0
) -> None:
    """The dtype-aware criterion. `ours` and `theirs` (torch's result in the same dtype) are
    compared with the float64 `ref`: ours must have torch's shape and dtype, be NaN / inf
    exactly where torch's result is, and elsewhere have a largest error no larger than
    torch's plus TOL[dtype] times the magnitude of `ref` (plus one subnormal step). `floor`
    bounds that magnitude from below where the result is a difference of larger terms."""
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != torch's {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != torch's {theirs.dtype}"
    ours, theirs, ref = ours.detach().cpu(), theirs.detach().cpu(), ref.detach().cpu().double()
    finite = torch.isfinite(theirs)
    if not finite.all():  # overflow or NaN / inf inputs: the same non-finite values as torch
        torch.testing.assert_close(
            ours[~finite], theirs[~finite], equal_nan=True, msg=lambda m: f"{what}: {m}"
        )
        finite &= torch.isfinite(ref)
        ours, theirs, ref = ours[finite], theirs[finite], ref[finite]
    if ref.numel() == 0:
        return
    # NaN in ours makes max() NaN, and the comparison below fail.
    ours_err = (ours.double() - ref).abs_().max().item()
    torch_err = (theirs.double() - ref).abs_().max().item()
    scale = max(ref.abs().max().item(), floor)
    info = torch.finfo(ours.dtype)
    allowed = torch_err + TOL[ours.dtype] * scale + info.smallest_normal * info.eps
    assert ours_err <= allowed, (
        f"{what}: error {ours_err:.3g} > torch's {torch_err:.3g} + tolerance "
        f"({ours.dtype}, |reference| up to {scale:.3g})"
    )


# ----------------------------------------------------------------- MNIST-format IDX files

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    """An IDX file: two zero bytes, the type, the number of dimensions, the big-endian
    dimensions, then the values (as the array holds them: big-endian for multi-byte types)."""
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, type_byte, array.ndim]) + dims + array.tobytes()


def write_idx(path: Path, data: bytes, gz: bool) -> None:
    """data at path, or gzipped at path + ".gz"."""
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def idx_folder(folder: Path, gzipped=(True, False, True, False), n_train=7, n_test=3, size=(5, 4),
               classes=10) -> tuple[np.ndarray, ...]:
    """A folder of the four MNIST IDX files of random uint8 images and labels; returns the
    arrays (train images, train labels, t10k images, t10k labels)."""
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
              rng.integers(0, classes, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
              rng.integers(0, classes, n_test, dtype=np.uint8))
    folder.mkdir(exist_ok=True)
    for name, array, gz in zip(IDX_NAMES, arrays, gzipped, strict=True):
        write_idx(folder / name, idx_bytes(array), gz)
    return arrays
