"""Helpers of the ops' autograd formulas."""

from __future__ import annotations

import torch


def grad_output_is_one(grad: torch.Tensor) -> bool:
    """Whether an incoming gradient is a plain tensor holding 1, so that gradients computed by
    the forward can be used as they are. Only asked on the CPU, where reading a plain scalar is
    free; a traced (fake, functional, functorch) one has no value to branch on."""
    return (
        type(grad) is torch.Tensor
        and not torch._C._functorch.is_functorch_wrapped_tensor(grad)
        and grad.item() == 1.0
    )
