"""Fused contrastive losses: NT-Xent (SimCLR) and InfoNCE (two towers, CLIP).

Both are built on one op, ssl_fast::contrastive_lse: it normalises the rows, and returns
them with the log-sum-exp of every row (and column) of the cosine-logit matrix, computed
tile by tile so that the matrix never exists; its backward recomputes the tiles. The loss
of a row is its log-sum-exp minus its positive logit, a row-wise dot product assembled
here from the normalised rows, so that autograd carries its gradient back into the op.
"""

from __future__ import annotations

import math

import torch

from .. import _checks, _ext, distributed, reference
from .reduction import reduce_rows, row_dot
from .siglip import OPS as SIGLIP_OPS

# Every op with kernels in csrc/contrastive/, SigLIP's (ops/siglip.py) included.
OPS = ("contrastive_lse", "contrastive_lse_backward") + SIGLIP_OPS
_REDUCTIONS = ("mean", "sum", "none")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake(q, k, scale, exclude, col_lse):
    acc = _acc_dtype(q.dtype)
    rows, cols = q.shape[0], (0 if k is None else k.shape[0])
    return (
        q.new_empty(q.shape, dtype=acc),
        q.new_empty(k.shape if k is not None else (0,), dtype=acc),
        q.new_empty((rows,), dtype=acc),
        q.new_empty((cols if col_lse else 0,), dtype=acc),
    )


def _fake_backward(grad_qn, grad_kn, grad_row, grad_col, q, k, qn, kn, row, col, scale, exclude, mask):
    # Contiguous whatever the layout of q and k, as the kernels return them.
    return (
        q.new_empty(q.shape) if mask[0] else q.new_empty(0),
        k.new_empty(k.shape) if mask[1] and k is not None else q.new_empty(0),
        torch.empty_like(scale) if mask[2] else q.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    q, k, scale, exclude, col_lse = inputs
    qn, kn, row, col = output
    ctx.col_lse = col_lse
    ctx.set_materialize_grads(False)  # an unused output (kn, col_lse) gets no zero gradient
    ctx.save_for_backward(q, k, scale, exclude, qn, kn, row, col)


def _backward(ctx, grad_qn, grad_kn, grad_row, grad_col):
    q, k, scale, exclude, qn, kn, row, col = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [need[0], need[1] and k is not None, need[2]]
    if torch.is_grad_enabled():  # create_graph=True: gradients that can be differentiated again
        return _reference_grads(ctx, (grad_qn, grad_kn, grad_row, grad_col), mask)
    dq, dk, dscale = torch.ops.ssl_fast.contrastive_lse_backward(
        grad_qn, grad_kn, grad_row, grad_col, q, k, qn, kn, row, col, scale, exclude, mask
    )
    return (dq if mask[0] else None, dk if mask[1] else None, dscale if mask[2] else None, None, None)


def _reference_grads(ctx, grads, mask) -> tuple:
    """Gradients through the materialised formula, recorded for higher-order autograd."""
    q, k, scale, exclude, *_ = ctx.saved_tensors
    inputs = [t for t, need in zip((q, k, scale), mask, strict=True) if need]
    with torch.enable_grad():
        outputs = reference.contrastive_lse(q, k, scale, exclude, ctx.col_lse)
        pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
        found = iter(torch.autograd.grad(
            [o for o, _ in pairs], inputs, [g for _, g in pairs], create_graph=True, allow_unused=True
        ))
    return tuple(next(found) if need else None for need in mask) + (None, None)


_ext.register("contrastive_lse", _fake, _backward, _setup_context)
_ext.register("contrastive_lse_backward", _fake_backward)


def contrastive_lse(
    q: torch.Tensor,
    k: torch.Tensor | None,
    scale: torch.Tensor,
    exclude: torch.Tensor | None = None,
    col_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qn, kn, row_lse, col_lse) of ssl_fast::contrastive_lse, from the kernel or the reference."""
    if _ext.use_kernel("contrastive_lse", q):
        return torch.ops.ssl_fast.contrastive_lse(q, k, scale, exclude, col_lse)
    return reference.contrastive_lse(q, k, scale, exclude, col_lse)


# ----------------------------------------------------------------- argument checks


def check_embeddings(name: str, **tensors: torch.Tensor) -> None:
    """Each tensor a non-empty 2-D floating-point [batch, features] batch, all on one device."""
    device = None
    for what, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name}: {what} must be 2-D [batch, features], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {what} must be a floating-point tensor, got dtype {t.dtype}")
        if t.shape[0] == 0:
            raise ValueError(f"{name}: {what} is an empty batch (shape {tuple(t.shape)})")
        if t.shape[1] == 0:
            raise ValueError(f"{name}: {what} has no features (shape {tuple(t.shape)})")
        if device is not None and t.device != device:
            first = next(iter(tensors))
            raise ValueError(f"{name}: {what} is on {t.device} but {first} is on {device}")
        device = t.device


def check_reduction(name: str, reduction: str) -> None:
    """reduction is 'mean', 'sum' or 'none'."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def temperature_scale(name: str, temperature: float) -> torch.Tensor:
    """1 / temperature as a 0-dim float64 CPU tensor (the op reads it once)."""
    if isinstance(temperature, torch.Tensor):
        raise TypeError(
            f"{name}: temperature must be a real number, got {temperature!r} (Tensor); pass a learnable "
            "scale as logit_scale"
        )
    t = _checks.real(name, "temperature", temperature, "> 0 and finite", lambda t: 0 < t < math.inf)
    return torch.tensor(1.0 / t, dtype=torch.float64)


# ----------------------------------------------------------------- NT-Xent


def check_two_views(
    name: str, z0: torch.Tensor, z1: torch.Tensor, temperature: float, reduction: str
) -> torch.Tensor:
    """The checks of a loss on two views z0, z1 ([N, D] each, one shape); returns the scale 1/t."""
    check_embeddings(name, z0=z0, z1=z1)
    if z0.shape != z1.shape:
        raise ValueError(
            f"{name}: z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    check_reduction(name, reduction)
    return temperature_scale(name, temperature)


def nt_xent(
    z0: torch.Tensor,
    z1: torch.Tensor,
    temperature: float = 0.5,
    reduction: str = "mean",
    *,
    gather_distributed: bool = False,
    group=None,
) -> torch.Tensor:
    """NT-Xent (SimCLR) loss of two views z0, z1 of shape [N, D].

    z = normalize(cat(z0, z1)); the loss of row i is logsumexp_{j != i}(z_i . z_j / t)
    minus z_i . z_{i+N} / t (and z_{i+N} pairs with z_i). reduction: 'mean' over the 2N
    rows, 'sum', or 'none' (the 2N row losses, z0's rows first). Inputs may be float16,
    bfloat16 (accumulated in float32; on CUDA the unit rows are multiplied in the inputs'
    type), float32 or float64; the result has their dtype.

    gather_distributed: under torch.distributed, each rank's rows are contrasted with the
    embeddings of all ranks of `group` (equal batch sizes on every rank); gradients reach
    every rank's inputs. The loss is the mean over this rank's rows, so that DDP's gradient
    averaging yields the gradient of the global mean.
    """
    name = "nt_xent"
    scale = check_two_views(name, z0, z1, temperature, reduction)
    temperature = float(temperature)
    if gather_distributed:
        distributed.check_available(name)
    dtype = torch.promote_types(z0.dtype, z1.dtype)
    z0, z1 = z0.to(dtype), z1.to(dtype)
    n = len(z0)
    # The rounding of a row's log-sum-exp depends on where the other rows sit, so swapping
    # the views would change the last bits: the kernel takes them in an order fixed by
    # their bits instead, and nt_xent(z1, z0) is nt_xent(z0, z1) to the bit.
    order = torch.arange(2, device=z0.device) ^ _bits_after(z0, z1).long()  # [0, 1] or [1, 0]
    z = torch.stack([z0, z1]).index_select(0, order).flatten(0, 1)
    if gather_distributed and distributed.world_size(group) > 1:
        rows = _nt_xent_gathered(z[:n], z[n:], temperature, group)
    else:
        zn, _, lse, _ = contrastive_lse(z, None, scale)
        if n == 1:
            # Each row's only other row is its positive: its log-sum-exp is the positive
            # logit, and the loss is 0 exactly (a logit recomputed here would round apart).
            rows = lse - lse
        else:
            pos = row_dot(zn[:n], zn[n:]) / temperature
            rows = lse - torch.cat([pos, pos])
    if reduction == "none":
        rows = rows.view(2, n).index_select(0, order).flatten()  # z0's rows first
    return reduce_rows(rows, reduction, dtype)


def _bits_after(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether a's bits come after b's, read as integers element by element (lexicographic
    order; a 0-dim bool tensor, False when equal): an order of the two that does not
    depend on which is given first, computed without leaving the device."""
    bits = getattr(torch, f"int{8 * a.element_size()}")
    a, b = a.reshape(-1).view(bits), b.reshape(-1).view(bits)
    first = (a != b).byte().argmax().view(1)  # the first element where they differ, 0 if none
    return (a.index_select(0, first) > b.index_select(0, first)).view(())


def _nt_xent_gathered(z0, z1, temperature, group) -> torch.Tensor:
    """The losses of this rank's 2n rows against the 2N = 2 n world rows of every rank."""
    n = len(z0)
    world_n = n * distributed.world_size(group)
    keys = torch.cat([distributed.gather(z0, group), distributed.gather(z1, group)])
    own = torch.arange(n, device=z0.device) + n * distributed.rank(group)
    exclude = torch.cat([own, own + world_n])  # each row's own copy among the keys
    positive = torch.cat([own + world_n, own])
    scale = temperature_scale("nt_xent", temperature)
    qn, kn, lse, _ = contrastive_lse(torch.cat([z0, z1]), keys, scale, exclude)
    return lse - row_dot(qn, kn[positive]) / temperature


# ----------------------------------------------------------------- InfoNCE


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.07,
    labels: torch.Tensor | None = None,
    symmetric: bool = False,
    logit_scale: torch.Tensor | None = None,
    reduction: str = "mean",
    *,
    gather_distributed: bool = False,
    group=None,
) -> torch.Tensor:
    """InfoNCE of query [M, D] against key [K, D] (two towers; K may exceed M, e.g. a queue
    of extra negatives): the loss of query i is the cross-entropy of its cosine logits
    qn_i . kn_j * scale over all K keys, the positive being key labels[i] (default i).

    symmetric=True (CLIP) averages it with the key-to-query term: key labels[i] must pick
    query i among all M queries. The scale is 1 / temperature, or logit_scale.exp() when
    a (learnable) logit_scale tensor is given; it then receives a gradient.
    reduction: 'mean' over the M queries, 'sum', or 'none'.

    gather_distributed: under torch.distributed, each rank's queries are contrasted with
    the keys of all ranks of `group` (and, symmetric, its keys with all queries), as in
    CLIP's training; query i pairs with key i (no labels; M = K, equal on every rank).
    The loss is the mean over this rank's queries, so that DDP's gradient averaging yields
    the gradient of the global mean.
    """
    name = "info_nce"
    check_embeddings(name, query=query, key=key)
    if query.shape[1] != key.shape[1]:
        raise ValueError(
            f"{name}: query has {query.shape[1]} features but key has {key.shape[1]} "
            f"(shapes {tuple(query.shape)} and {tuple(key.shape)})"
        )
    check_reduction(name, reduction)
    if gather_distributed:
        distributed.check_available(name)
    labels = _check_labels(name, labels, len(query), len(key), query.device)
    if gather_distributed and (labels is not None or len(query) != len(key)):
        raise ValueError(
            f"{name}: gather_distributed pairs query i with key i, so it takes no labels and as many "
            f"keys as queries (got {len(query)} queries, {len(key)} keys"
            + (", labels)" if labels is not None else ")")
        )
    if logit_scale is None:
        scale = temperature_scale(name, temperature)
    else:
        if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
            raise TypeError(f"{name}: logit_scale must be a one-element tensor, got {logit_scale!r}")
        if not logit_scale.is_floating_point():
            raise TypeError(f"{name}: logit_scale must be floating-point, got dtype {logit_scale.dtype}")
        scale = logit_scale.reshape(()).exp()
    dtype = torch.promote_types(query.dtype, key.dtype)
    query, key = query.to(dtype), key.to(dtype)
    if gather_distributed and distributed.world_size(group) > 1:
        rows = _info_nce_gathered(query, key, scale, group)
        if symmetric:
            rows = (rows + _info_nce_gathered(key, query, scale, group)) / 2
        return reduce_rows(rows, reduction, dtype)
    qn, kn, row, col = contrastive_lse(query, key, scale, None, symmetric)
    pos = row_dot(qn, kn[: len(qn)] if labels is None else kn[labels]) * scale
    rows = row - pos
    if symmetric:
        rows = (rows + (col[: len(query)] if labels is None else col[labels]) - pos) / 2
    return reduce_rows(rows, reduction, dtype)


def _info_nce_gathered(query, key, scale, group) -> torch.Tensor:
    """The row losses of this rank's queries against the keys of every rank."""
    own = torch.arange(len(query), device=query.device) + len(query) * distributed.rank(group)
    qn, kn, row, _ = contrastive_lse(query, distributed.gather(key, group), scale, None, False)
    return row - row_dot(qn, kn[own]) * scale


def _check_labels(name: str, labels, m: int, k: int, device: torch.device) -> torch.Tensor | None:
    """None for the default arange(M) (which needs K >= M)."""
    if labels is None:
        if k < m:
            raise ValueError(f"{name}: without labels query i pairs with key i, so key needs at least "
                             f"{m} rows, got {k}")
        return None
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or labels.shape != (m,):
        got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else labels
        raise ValueError(f"{name}: labels must be an int64 tensor of shape [{m}], got {got}")
    if labels.device != device:
        raise ValueError(f"{name}: labels is on {labels.device} but query is on {device}")
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = labels.min().item(), labels.max().item()
        if low < 0 or high >= k:
            raise ValueError(f"{name}: labels must lie in [0, {k}), got values from {low} to {high}")
    return labels
