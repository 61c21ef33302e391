"""SupCon and DCL / DCLW: compositions of ssl_fast::contrastive_lse, no kernel of their own.

SupCon (Khosla et al., the L_out form): the loss of a row is its log-sum-exp over every other
row minus the mean of its positive logits. That mean is the row's dot product with the sum
of the other unit rows of its class, over their count: a segment sum of the rows sorted by
label (O(N D) memory and work), never an N x N mask. Gathered across ranks, each rank's rows
meet the rows of all ranks, with the class sums of the whole world.

DCL (Yeh et al.): NT-Xent with the positive left out of the denominator. Each row's
denominator is assembled from op calls that exclude its positive as well as itself, rather
than taken out of NT-Xent's log-sum-exp as log(1 - exp(pos - lse)): once training aligns
the views the positive dominates that sum, and the difference cancels to rounding noise
in float32 (a negative 18 logits below the positive weighs 1.5e-8 of it, under float32's
resolution).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import distributed
from .contrastive import (
    check_embeddings,
    check_reduction,
    check_two_views,
    contrastive_lse,
    temperature_scale,
)
from .reduction import reduce_rows, row_dot

# ----------------------------------------------------------------- SupCon


class _ClassTotals(torch.autograd.Function):
    """Each row's class total: rows [M, D] sorted by class, `segment` the class index of each
    row, `sizes` the row count of each class index (zero-padded to M) -> for every row the
    sum of the rows of its class. torch.segment_reduce sums each segment in a fixed order, on
    one CPU thread (so its bits do not depend on the thread count) and without atomics on
    CUDA, where index_add_ would add in a racing order.
    The map is B B^T for the M x C membership matrix B: symmetric, so its backward is the
    map itself, applied to the gradient."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, sizes: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(sizes, segment)
        return torch.segment_reduce(rows, "sum", lengths=sizes, axis=0).index_select(0, segment)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sizes, segment = ctx.saved_tensors
        return _ClassTotals.apply(grad, sizes, segment), None, None


def sup_con(
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    reduction: str = "mean",
    *,
    gather_distributed: bool = False,
    group=None,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., L_out) of embeddings z.

    z: [N, D] rows with labels [N], or [N, V, D], V views of each of N samples with labels
    [N] per sample (labels=None: each sample its own class, i.e. SimCLR with V views). Rows
    of one class are positives of each other. The loss of row i is
    logsumexp_{j != i}(z_i . z_j / t) minus the mean of z_i . z_p / t over its positives p
    (cosine logits). A row without a positive, or without a negative, has no loss: 0, left
    out of the mean (as pytorch-metric-learning's SupConLoss and its AvgNonZeroReducer; so
    a batch of one class has loss 0). reduction: 'mean' over the rows that have a loss,
    'sum', or 'none' (z's shape without D). Labels: any integer dtype. Inputs may be float16,
    bfloat16 (accumulated in float32), float32 or float64; the result has their dtype.

    gather_distributed: under torch.distributed, each rank's rows are contrasted with the
    rows (and labels) of all ranks of `group` (equal batch sizes; labels=None numbers the
    samples across ranks). 'mean' divides this rank's sum by the world's count of rows with
    a loss over the world size, so that DDP's averaging yields the global mean and its
    gradient.
    """
    name = "sup_con"
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name}: z must be a Tensor, got {type(z).__name__}")
    if z.dim() not in (2, 3):
        raise ValueError(f"{name}: z must be [N, D] or [N, V, D] (V views of each sample), got shape "
                         f"{tuple(z.shape)}")
    rows = z.flatten(0, 1) if z.dim() == 3 else z
    check_embeddings(name, z=rows)
    check_reduction(name, reduction)
    scale = temperature_scale(name, temperature)
    temperature = float(temperature)
    if gather_distributed:
        distributed.check_available(name)
    gathered = gather_distributed and distributed.world_size(group) > 1
    labels = _row_labels(name, labels, z, z.shape[0] * distributed.rank(group) if gathered else 0)
    if gathered:
        own = torch.arange(len(rows), device=z.device) + len(rows) * distributed.rank(group)
        zn, keys, lse, _ = contrastive_lse(rows, distributed.gather(rows, group), scale, own)
        world_rows = len(keys)
        totals, count = _class_totals(keys, distributed.gather(labels, group))
        with_loss = ((count > 1) & (count < world_rows)).sum().clamp(min=1).double()
        with_loss = with_loss / distributed.world_size(group)  # the ranks' mean is the world's
        totals, count = totals.index_select(0, own), count.index_select(0, own)
    else:
        zn, _, lse, _ = contrastive_lse(rows, None, scale)
        world_rows = len(rows)
        totals, count = _class_totals(zn, labels)
    mean_positive = row_dot(zn, totals - zn) / temperature / (count - 1).clamp(min=1)
    has_loss = (count > 1) & (count < world_rows)  # a positive and a negative
    if not gathered:
        with_loss = has_loss.sum().clamp(min=1)  # no row with a loss: a mean of 0
    losses = torch.where(has_loss, lse - mean_positive, 0)
    if reduction == "none":
        return losses.view(z.shape[:-1]).to(z.dtype)
    total = reduce_rows(losses, "sum", torch.float64)
    if reduction == "mean":
        total = total / with_loss
    return total.to(z.dtype)


def _class_totals(rows: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, the sum of the rows of its class (itself included) and their count."""
    # Rows of a class side by side, in their order: each class a segment.
    sorted_labels, order = torch.sort(labels, stable=True)
    first = torch.zeros(1, dtype=torch.long, device=labels.device)
    segment = torch.cat([first, (sorted_labels[1:] != sorted_labels[:-1]).long()]).cumsum(0)
    sizes = torch.zeros_like(segment).index_add_(0, segment, torch.ones_like(segment))
    totals = _ClassTotals.apply(rows.index_select(0, order), sizes, segment)
    restore = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
    return totals.index_select(0, restore), sizes.index_select(0, segment).index_select(0, restore)


def _row_labels(name: str, labels, z: torch.Tensor, first: int) -> torch.Tensor:
    """The int64 label of every row of z (rows of [N, V, D] sample by sample); without
    labels, samples are numbered from `first`."""
    n = z.shape[0]
    if labels is None:
        if z.dim() == 2:
            raise ValueError(f"{name}: [N, D] embeddings need labels; without them pass [N, V, D] views "
                             "(the views of a sample are its positives)")
        labels = torch.arange(first, first + n, device=z.device)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name}: labels must be a Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name}: labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{name}: labels must have shape [{n}] (one per sample of z {tuple(z.shape)}), "
                         f"got {tuple(labels.shape)}")
    if labels.device != z.device:
        raise ValueError(f"{name}: labels is on {labels.device} but z is on {z.device}")
    labels = labels.long()
    return labels.repeat_interleave(z.shape[1]) if z.dim() == 3 else labels


# ----------------------------------------------------------------- DCL, DCLW


def dcl(
    z0: torch.Tensor,
    z1: torch.Tensor,
    temperature: float = 0.1,
    weight_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    reduction: str = "mean",
    *,
    gather_distributed: bool = False,
    group=None,
) -> torch.Tensor:
    """Decoupled contrastive loss (Yeh et al.) of two views z0, z1 of shape [N, D].

    z = normalize(cat(z0, z1)); the loss of row i is logsumexp over every row but i and its
    positive (the other view of its sample) of z_i . z_j / t, minus w_i z_i . z_pos / t.
    weight_fn (lightly's): the weights w of z0's rows are weight_fn(z0n, z1n), those of z1's
    rows weight_fn(z1n, z0n), for the unit rows in the inputs' dtype; a weight tensor of [N]
    (or one value); gradients flow through it if it has them. None: w = 1 (DCL);
    negative_mises_fisher_weights: DCLW. reduction: 'mean' over the 2N rows, 'sum', or
    'none' (z0's rows first). With N = 1 and one process a row has no negative: its loss is
    -inf, as lightly's. Dtypes as ssl_fast.nt_xent.

    gather_distributed: under torch.distributed, each rank's rows are contrasted with the
    embeddings of all ranks of `group` (equal batch sizes on every rank; weights from the
    local batch, as lightly); the loss is the mean over this rank's rows, so that DDP's
    gradient averaging yields the gradient of the global mean.
    """
    name = "dcl"
    scale = check_two_views(name, z0, z1, temperature, reduction)
    temperature = float(temperature)
    if weight_fn is not None and not callable(weight_fn):
        raise TypeError(f"{name}: weight_fn must be callable or None, got {type(weight_fn).__name__}")
    if gather_distributed:
        distributed.check_available(name)
    dtype = torch.promote_types(z0.dtype, z1.dtype)
    z0, z1 = z0.to(dtype), z1.to(dtype)
    if gather_distributed and distributed.world_size(group) > 1:
        z0n, z1n, negatives = _dcl_gathered(z0, z1, scale, group)
    else:
        z0n, z1n, negatives = _dcl_negatives(z0, z1, scale)
    pos = row_dot(z0n, z1n) / temperature
    if weight_fn is None:
        positive = torch.cat([pos, pos])
    else:
        a, b = z0n.to(dtype), z1n.to(dtype)
        positive = torch.cat([pos * _weights(name, weight_fn, a, b), pos * _weights(name, weight_fn, b, a)])
    return reduce_rows(negatives - positive, reduction, dtype)


def _dcl_negatives(z0, z1, scale) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z0n, z1n, the log-sum-exp of each of the 2N rows over its negatives): a view's rows
    against themselves (diagonal excluded: symmetric, half the tiles) and against the
    other view with the positives excluded (row and column sums from one pass)."""
    n = len(z0)
    z0n, z1n, lse01, lse10 = contrastive_lse(z0, z1, scale, torch.arange(n, device=z0.device), True)
    if n == 1:  # a single pair has no negative; the sums below would be -inf with NaN gradients
        return z0n, z1n, torch.full((2,), -math.inf, dtype=lse01.dtype, device=z0.device)
    lse00 = contrastive_lse(z0, None, scale)[2]
    lse11 = contrastive_lse(z1, None, scale)[2]
    return z0n, z1n, torch.logaddexp(torch.cat([lse00, lse11]), torch.cat([lse01, lse10]))


def _dcl_gathered(z0, z1, scale, group) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_dcl_negatives for this rank's rows against the rows of every rank. In either
    gathered view, the key at a row's own index is the row itself or its positive: one
    exclusion per call leaves both out."""
    n = len(z0)
    own = torch.arange(n, device=z0.device) + n * distributed.rank(group)
    query, exclude = torch.cat([z0, z1]), torch.cat([own, own])
    qn, _, lse0, _ = contrastive_lse(query, distributed.gather(z0, group), scale, exclude)
    lse1 = contrastive_lse(query, distributed.gather(z1, group), scale, exclude)[2]
    return qn[:n], qn[n:], torch.logaddexp(lse0, lse1)


def _weights(name: str, weight_fn, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    w = weight_fn(a, b)
    if not isinstance(w, torch.Tensor) or w.dim() > 1 or w.numel() not in (1, len(a)):
        got = f"shape {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"{name}: weight_fn must return a tensor of {len(a)} weights (one per pair), "
                         f"got {got}")
    return w


def negative_mises_fisher_weights(out0: torch.Tensor, out1: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """DCLW's weights (lightly's function of that name): 2 - N softmax_i(out0_i . out1_i / sigma)
    over the N pairs, without gradient; out0, out1: unit rows [N, D]."""
    similarity = row_dot(out0.detach(), out1.detach()) / sigma
    return 2 - len(out0) * torch.softmax(similarity, dim=0)
