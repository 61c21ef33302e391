"""Sums whose bits do not depend on the thread count.

torch's CPU sum splits a long reduction (a whole tensor, or one long row) between threads,
so its rounding changes with torch.get_num_threads(). A cumulative sum scans every line
serially, in one order, on any number of threads: its last element is a sum with fixed
bits. It costs one pass over data that the losses built on it read anyway.
"""

from __future__ import annotations

import torch


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot products of matching rows of a and b ([M, D] -> [M])."""
    return (a * b).cumsum_(-1)[..., -1]


def reduce_rows(rows: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    """rows ([M]) as they are ('none'), or their 'sum' or 'mean' (summed in float64), in dtype."""
    if reduction == "none":
        return rows.to(dtype)
    wide = rows.double()
    total = wide.cumsum(0)[-1] if rows.numel() else wide.sum()  # an empty sum is 0, its mean NaN
    return (total if reduction == "sum" else total / rows.numel()).to(dtype)
