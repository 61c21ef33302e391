"""torch.distributed helpers of the contrastive losses and the trainer: world size, rank, an
all-gather whose backward sums the gradients of every rank, and a safe teardown.

Each rank's loss is the mean over its own rows; the gathered embeddings of other ranks
receive gradients too, so the backward of the gather all-reduces (sums) the gradient of
the whole gathered tensor and keeps this rank's slice. DDP's averaging of parameter
gradients then yields exactly the gradient of the global mean loss. (A gather without
that backward loses the other ranks' terms, which shows up as a gradient scaled by
roughly 1 / world size.)
"""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist


def check_available(name: str) -> None:
    """Raises ValueError when this build of torch has no torch.distributed, which
    gather_distributed=True needs (as lightly's losses do)."""
    if not dist.is_available():
        raise ValueError(
            f"{name}: gather_distributed=True needs torch.distributed, which this build of torch lacks "
            "(torch.distributed.is_available() is False); pass gather_distributed=False"
        )


def world_size(group=None) -> int:
    """The size of `group` (the default group when None), 1 when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def rank(group=None) -> int:
    """This process's rank in `group`, 0 when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank(group)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, group=ctx.group)
        n = len(grad) // world_size(ctx.group)
        return grad[n * rank(ctx.group) : n * (rank(ctx.group) + 1)], None


def gather(x: torch.Tensor, group=None) -> torch.Tensor:
    """cat of `x` from every rank of `group`, in rank order (equal shapes on all ranks);
    differentiable: each rank's input receives the sum of all ranks' gradients."""
    if world_size(group) == 1:
        return x
    return _Gather.apply(x, group)


def destroy_process_group() -> None:
    """dist.destroy_process_group(), with the process group freed now, while Python runs.

    A gloo process group freed only at interpreter exit can abort the process ("terminate
    called without an active exception"): its worker threads may still be releasing the
    tensors of the last collectives and need the interpreter to do it. Once its holders are
    gone (drop the DistributedDataParallel wrappers first), a collection frees it here, and
    its threads are joined.
    """
    gc.collect()  # holders in reference cycles (a trainer, its optimiser and schedule)
    dist.destroy_process_group()
