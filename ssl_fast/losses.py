"""nn.Module wrappers: each subclasses the torch loss it replaces and keeps its constructor."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from . import _checks
from .distributed import check_available, gather, rank, world_size
from .ops.contrastive import contrastive_lse, info_nce, nt_xent, temperature_scale
from .ops.contrastive_family import dcl, negative_mises_fisher_weights, sup_con
from .ops.reduction import reduce_rows, row_dot
from .ops.regression import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    mse_loss,
    smooth_l1_loss,
)
from .ops.siglip import siglip


class SmoothL1Loss(nn.SmoothL1Loss):
    """Drop-in for torch.nn.SmoothL1Loss running the fused ssl_fast.smooth_l1_loss.

    forward(input, target, mask=None): mask as in ssl_fast.smooth_l1_loss.
    """

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return smooth_l1_loss(input, target, beta=self.beta, reduction=self.reduction, mask=mask)


class MSELoss(nn.MSELoss):
    """Drop-in for torch.nn.MSELoss running the fused ssl_fast.mse_loss.

    forward(input, target, mask=None): mask as in ssl_fast.mse_loss.
    """

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return mse_loss(input, target, reduction=self.reduction, mask=mask)


class BCELoss(nn.BCELoss):
    """Drop-in for torch.nn.BCELoss running the fused ssl_fast.binary_cross_entropy
    (the constructor's weight is a buffer, as in torch)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Drop-in for torch.nn.BCEWithLogitsLoss running the fused
    ssl_fast.binary_cross_entropy_with_logits (weight and pos_weight are buffers, as in torch)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy_with_logits(
            input, target, weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


class NTXentLoss(nn.Module):
    """Drop-in for lightly's NTXentLoss running the fused ssl_fast.nt_xent.

    temperature: > 0. memory_bank_size: 0 (SimCLR: the other samples of the batch are the
    negatives), or (size, dim) as in lightly, or a bare size (dim taken from the first
    batch): MoCo-style, the negatives of out0 are a FIFO bank of past normalised out1
    embeddings, initialised with random unit vectors, used before it is updated with this
    batch, and updated only when out0 requires grad (as lightly does; a batch that
    reaches the end of the bank fills it and its remainder is dropped).
    gather_distributed, group: contrast with the embeddings of every rank
    (see ssl_fast.nt_xent); with a memory bank, the bank is updated with all ranks' out1.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        memory_bank_size: int | tuple[int, int] = 0,
        gather_distributed: bool = False,
        group=None,
    ):
        super().__init__()
        temperature_scale("NTXentLoss", temperature)
        if gather_distributed:
            check_available("NTXentLoss")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed
        self.group = group
        size = (memory_bank_size,) if _checks.is_integer(memory_bank_size) else memory_bank_size
        if (
            not isinstance(size, (tuple, list))
            or len(size) not in (1, 2)
            or not all(_checks.is_integer(s) and s >= 0 for s in size)
        ):
            raise ValueError(
                f"NTXentLoss: memory_bank_size must be 0, a size or (size, dim) of non-negative ints, "
                f"got {memory_bank_size!r} ({type(memory_bank_size).__name__})"
            )
        size = tuple(int(s) for s in size)
        self.bank_size = size[0]
        self.register_buffer("bank", None, persistent=False)
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long), persistent=False)
        if self.bank_size and len(size) == 2:
            self._init_bank(size[1], torch.device("cpu"))

    def _init_bank(self, dim: int, device: torch.device) -> None:
        self.bank = nn.functional.normalize(torch.randn(self.bank_size, dim), dim=-1).to(device)

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        if not self.bank_size:
            return nt_xent(
                out0, out1, self.temperature, gather_distributed=self.gather_distributed, group=self.group
            )
        if self.bank is None:
            self._init_bank(out1.shape[-1], out1.device)
        return self._with_bank(out0, out1)

    def _with_bank(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        if out0.shape != out1.shape or out0.dim() != 2:
            raise ValueError(
                f"NTXentLoss: out0 and out1 must be 2-D of the same shape, got {tuple(out0.shape)} "
                f"and {tuple(out1.shape)}"
            )
        if out1.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"NTXentLoss: the memory bank holds {self.bank.shape[1]}-d embeddings, got {out1.shape[1]}-d"
            )
        out1 = nn.functional.normalize(out1, dim=1)
        negatives = self.bank.to(device=out0.device, dtype=out0.dtype, copy=True)
        qn, _, lse, _ = contrastive_lse(out0, negatives, temperature_scale("NTXentLoss", self.temperature))
        pos = row_dot(qn, out1.to(qn.dtype)) / self.temperature
        # log(exp(pos) + exp(lse)) - pos as softplus(lse - pos): the difference of the two
        # logits is exact, and the sum is not rounded at the logits' magnitude (1 / temperature).
        loss = reduce_rows(torch.logaddexp(lse - pos, torch.zeros_like(pos)), "mean", out0.dtype)
        if out0.requires_grad:
            self._enqueue(out1.detach())
        return loss

    @torch.no_grad()
    def _enqueue(self, batch: torch.Tensor) -> None:
        if self.gather_distributed:
            batch = gather(batch, self.group)
        ptr = int(self.bank_ptr)
        if ptr + len(batch) >= self.bank_size:
            self.bank[ptr:] = batch[: self.bank_size - ptr].to(self.bank)
            self.bank_ptr.zero_()
        else:
            self.bank[ptr : ptr + len(batch)] = batch.to(self.bank)
            self.bank_ptr[0] = ptr + len(batch)


class InfoNCELoss(nn.Module):
    """InfoNCE / CLIP loss module running the fused ssl_fast.info_nce.

    temperature: the initial temperature. learn_temperature: hold a learnable
    logit_scale = log(1 / temperature) (CLIP's parametrisation). symmetric: CLIP's
    two-directional loss. gather_distributed, group: contrast with the queries and keys of
    every rank (query i pairs with key i). forward(query, key, labels=None) as
    ssl_fast.info_nce.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        symmetric: bool = False,
        learn_temperature: bool = False,
        reduction: str = "mean",
        gather_distributed: bool = False,
        group=None,
    ):
        super().__init__()
        temperature_scale("InfoNCELoss", temperature)
        if gather_distributed:
            check_available("InfoNCELoss")
        self.temperature = float(temperature)
        self.symmetric = symmetric
        self.reduction = reduction
        self.logit_scale = (
            nn.Parameter(torch.tensor(math.log(1.0 / temperature))) if learn_temperature else None
        )
        self.gather_distributed, self.group = gather_distributed, group

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return info_nce(
            query, key, self.temperature, labels, self.symmetric, self.logit_scale, self.reduction,
            gather_distributed=self.gather_distributed, group=self.group,
        )


class SupConLoss(nn.Module):
    """Drop-in for pytorch-metric-learning's SupConLoss (cosine similarity, its default
    AvgNonZeroReducer) running ssl_fast.sup_con.

    forward(embeddings, labels=None): embeddings [N, D] with labels [N], or [N, V, D] views
    with per-sample labels [N] (None: each sample its own class); see ssl_fast.sup_con.
    gather_distributed, group: contrast with the rows of every rank. pytorch-metric-learning's
    other arguments (a distance, reducer or regulariser; a miner's indices_tuple, ref_emb)
    have no counterpart: it is the default cosine SupConLoss that this replaces.
    """

    def __init__(
        self, temperature: float = 0.1, reduction: str = "mean", gather_distributed: bool = False, group=None
    ):
        super().__init__()
        temperature_scale("SupConLoss", temperature)
        if gather_distributed:
            check_available("SupConLoss")
        self.temperature = float(temperature)
        self.reduction = reduction
        self.gather_distributed, self.group = gather_distributed, group

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return sup_con(embeddings, labels, self.temperature, self.reduction,
                       gather_distributed=self.gather_distributed, group=self.group)


class DCLLoss(nn.Module):
    """Drop-in for lightly's DCLLoss running ssl_fast.dcl (decoupled contrastive learning).

    temperature: > 0. weight_fn: lightly's weighting of the positive term (None: DCL).
    gather_distributed, group: contrast with the embeddings of every rank (see ssl_fast.dcl).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        weight_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        gather_distributed: bool = False,
        group=None,
    ):
        super().__init__()
        temperature_scale(type(self).__name__, temperature)
        if weight_fn is not None and not callable(weight_fn):
            raise TypeError(f"{type(self).__name__}: weight_fn must be callable or None, got "
                            f"{type(weight_fn).__name__}")
        if gather_distributed:
            check_available(type(self).__name__)
        self.temperature = float(temperature)
        self.weight_fn = weight_fn
        self.gather_distributed = gather_distributed
        self.group = group

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        return dcl(out0, out1, self.temperature, self.weight_fn,
                   gather_distributed=self.gather_distributed, group=self.group)


class DCLWLoss(DCLLoss):
    """Drop-in for lightly's DCLWLoss: DCL with the negative von Mises-Fisher weights of
    sigma > 0 (ssl_fast.ops.contrastive_family.negative_mises_fisher_weights)."""

    def __init__(
        self, temperature: float = 0.1, sigma: float = 0.5, gather_distributed: bool = False, group=None
    ):
        sigma = _checks.real("DCLWLoss", "sigma", sigma, "> 0 and finite", lambda s: 0 < s < math.inf)
        weights = partial(negative_mises_fisher_weights, sigma=sigma)
        super().__init__(temperature, weights, gather_distributed, group)
        self.sigma = sigma
class SigLipLoss(nn.Module):
    """Drop-in for open_clip's SigLipLoss running the fused ssl_fast.siglip.

    The constructor is open_clip's: cache_labels is accepted and unused (no labels matrix
    exists); with world_size > 1, rank and world_size must be this process's in
    torch.distributed's `group`, and each rank's images are scored against every rank's
    texts through one all-gather, whatever dist_impl names ('bidir', 'shift', 'reduce',
    'gather': open_clip's exchanges, which give the same loss and gradients).
    forward(image_features, text_features, logit_scale, logit_bias, output_dict=False)
    as open_clip's: features normalised by the caller, logit_scale already exponentiated.
    """

    DIST_IMPLS = ("bidir", "shift", "reduce", "gather")

    def __init__(
        self,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dist_impl: str | None = None,
        group=None,
    ):
        super().__init__()
        name = "SigLipLoss"
        self.cache_labels = cache_labels
        self.rank = _checks.integer(name, "rank", rank, ">= 0", lambda r: r >= 0)
        self.world_size = _checks.integer(name, "world_size", world_size, ">= 1", lambda w: w >= 1)
        if self.rank >= self.world_size:
            raise ValueError(f"{name}: rank must be below world_size ({self.world_size}), got {self.rank}")
        self.dist_impl = dist_impl or "bidir"
        if self.dist_impl not in self.DIST_IMPLS:
            raise ValueError(
                f"{name}: dist_impl must be one of {', '.join(self.DIST_IMPLS)}, got {dist_impl!r}"
            )
        if self.world_size > 1:
            check_available(name)
        self.group = group

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        gathered = self.world_size > 1
        if gathered and (world_size(self.group), rank(self.group)) != (self.world_size, self.rank):
            raise ValueError(
                f"SigLipLoss: made for rank {self.rank} of {self.world_size}, but this process is rank "
                f"{rank(self.group)} of {world_size(self.group)} in torch.distributed"
            )
        loss = siglip(
            image_features, text_features, logit_scale, logit_bias,
            gather_distributed=gathered, group=self.group,
        )
        return {"contrastive_loss": loss} if output_dict else loss
