"""Fused regression losses: smooth-L1 (time-series prediction), MSE (reconstruction) and
binary cross-entropy on probabilities or logits (multi-label heads, masked-token and
patch discrimination).

One pass over input and target gives the reduced loss. When the input needs a
gradient, the same pass writes d loss / d input (the forward on the CPU), so that
the usual `loss.backward()` (grad_output == 1) costs no further pass; otherwise the
backward op recomputes the gradient in one pass from input and target. With
create_graph=True the backward runs the PyTorch formula instead, so that second
derivatives exist. The gradient of a difference loss (smooth-L1, MSE) in the target is
minus the one in the input; the cross-entropies' target gradient is a PyTorch formula
(targets rarely need one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F

from .. import _checks, _ext, reference
from .autograd import grad_output_is_one
from .reduction import reduce_rows

OPS = ("smooth_l1_loss", "mse_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits")
# Losses of d = input - target: d loss / d target = -(d loss / d input).
_DIFFERENCE_LOSSES = ("smooth_l1_loss", "mse_loss")
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_NONE, _MEAN, _SUM = 0, 1, 2


def _validate(
    name: str, input: torch.Tensor, target: torch.Tensor, reduction: str, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Checks a call as torch would, promotes both sides to one dtype, returns the loss shape."""
    for what, t in (("input", input), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {what} must be a floating-point tensor, got dtype {t.dtype}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if input.device != target.device:
        raise ValueError(f"{name}: input is on {input.device} but target is on {target.device}")
    try:
        shape = tuple(torch.broadcast_shapes(input.shape, target.shape))
    except RuntimeError:
        raise ValueError(
            f"{name}: input of shape {tuple(input.shape)} and target of shape "
            f"{tuple(target.shape)} do not broadcast"
        ) from None
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
            got = getattr(mask, "dtype", type(mask).__name__)
            raise TypeError(f"{name}: mask must be a bool or floating-point tensor, got {got}")
        if mask.device != input.device:
            raise ValueError(f"{name}: mask is on {mask.device} but input is on {input.device}")
        if mask.dim() > len(shape) or tuple(mask.shape) != shape[: mask.dim()]:
            raise ValueError(
                f"{name}: mask of shape {tuple(mask.shape)} must equal the leading dims of the "
                f"loss shape {shape}"
            )
    dtype = torch.promote_types(input.dtype, target.dtype)
    return input.to(dtype), target.to(dtype), shape


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the kernels' weights and sums for inputs of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mask_weight(
    mask: torch.Tensor, shape: Sequence[int], reduction: str, dtype: torch.dtype
) -> torch.Tensor:
    """Turns a position mask into per-element weights that make the kernel's weighted sum
    equal to the masked loss (mean over trailing dims, then over masked positions)."""
    per_position = math.prod(shape[mask.dim() :])
    weight = mask.detach().to(_accumulate_dtype(dtype))
    if reduction == "mean":
        weight = weight / (reduce_rows(weight.reshape(-1), "sum", weight.dtype) * per_position)
    else:
        weight = weight / per_position
    return weight.reshape(tuple(mask.shape) + (1,) * (len(shape) - mask.dim()))


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return grad if grad.shape == shape else grad.sum_to_size(shape)


def _reference_grads(name, ctx, grad_loss, input, target, weight) -> tuple:
    """Gradients through the PyTorch formula of the op, recorded for higher-order autograd."""
    *params, reduction = ctx.params
    pairs = list(zip((input, target), ctx.needs_input_grad[:2], strict=True))
    wanted = [t for t, need in pairs if need]
    with torch.enable_grad():
        loss = getattr(reference, name)(input, target, *params, reduction="none")
        if weight is not None:
            loss = loss * weight
        if reduction != _NONE:
            loss = loss.sum() if reduction == _SUM else loss.mean()
        grads = iter(torch.autograd.grad(loss, wanted, grad_loss, create_graph=True))
    return tuple(next(grads) if need else None for _, need in pairs)


# Schemas: name(input, target, *params, reduction, weight, compute_grad) -> (loss, grad) and
# name_backward(grad_output, input, target, *params, reduction, weight) -> grad; one set of
# fake kernels and autograd serves every loss of the family.
def _fake(input, target, *rest):
    reduction, compute_grad = rest[-3], rest[-1]
    shape = torch.broadcast_shapes(input.shape, target.shape)
    loss = input.new_empty(shape if reduction == _NONE else ())
    return loss, input.new_empty(shape if compute_grad else (0,))


def _fake_backward(grad_output, input, target, *rest):
    return input.new_empty(torch.broadcast_shapes(input.shape, target.shape))


def _setup_context(name, ctx, inputs, output):
    input, target, *rest = inputs
    params, weight, compute_grad = rest[:-2], rest[-2], rest[-1]
    ctx.name = name
    ctx.params = params  # (*loss params, reduction), as the backward op takes them
    ctx.shapes = (input.shape, target.shape)
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # else autograd fills an n-sized zero grad for output[1]
    ctx.save_for_backward(input, target, weight)
    # Held outside save_for_backward and dropped by the first backward, so that
    # autograd can adopt it as input.grad without a copy; a second backward
    # (retain_graph=True) recomputes.
    ctx.forward_grad = output[1] if compute_grad else None


def _bce_target_grad(ctx, grad_loss, input, target, weight) -> torch.Tensor:
    """d loss / d target of the cross-entropies, by torch's formulas: -logit(input) for
    probabilities; -input for logits, log_sigmoid(-input) - pos_weight log_sigmoid(input)
    with a pos_weight (the same, written so that infinite logits give what torch gives)."""
    *params, reduction = ctx.params
    if ctx.name == "binary_cross_entropy":
        grad = -torch.logit(input)
    else:
        (pos_weight,) = params
        if pos_weight is None:
            grad = -input
        else:
            grad = F.logsigmoid(-input) - pos_weight * F.logsigmoid(input)
    if weight is not None:
        grad = grad * weight
    upstream = grad_loss / grad.numel() if reduction == _MEAN else grad_loss
    return (grad * upstream).to(target.dtype)


def _backward(ctx, grad_loss, _grad_of_grad):
    input, target, weight = ctx.saved_tensors
    saved, ctx.forward_grad = ctx.forward_grad, None
    unused = (None,) * (len(ctx.params) + 2)
    if grad_loss is None:
        return (None, None) + unused
    if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
        return _reference_grads(ctx.name, ctx, grad_loss, input, target, weight) + unused
    difference = ctx.name in _DIFFERENCE_LOSSES
    grad = None
    if ctx.needs_input_grad[0] or (difference and ctx.needs_input_grad[1]):
        if saved is not None and grad_output_is_one(grad_loss):
            grad = saved
        else:  # recomputed rather than scaled, so that 16-bit gradients are rounded once
            backward_op = getattr(torch.ops.ssl_fast, f"{ctx.name}_backward")
            grad = backward_op(grad_loss, input, target, *ctx.params, weight)
    grad_input = _sum_to(grad, ctx.shapes[0]) if ctx.needs_input_grad[0] else None
    grad_target = None
    if ctx.needs_input_grad[1]:
        grad_target = -grad if difference else _bce_target_grad(ctx, grad_loss, input, target, weight)
        grad_target = _sum_to(grad_target, ctx.shapes[1])
    return (grad_input, grad_target) + unused


def _run(
    name: str,
    params: tuple,
    input: torch.Tensor,
    target: torch.Tensor,
    shape: tuple[int, ...],
    reduction: str,
    mask: torch.Tensor | None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The op `name` on checked operands; weight (accumulation dtype) or a mask, not both."""
    if mask is None:
        code = _REDUCTIONS[reduction]
    else:
        weight = _mask_weight(mask, shape, reduction, input.dtype)
        code = _NONE if reduction == "none" else _SUM
    # Only worth it where grad_output can be read for free (a CPU scalar): elsewhere the
    # backward cannot tell grad_output == 1 without a synchronisation and recomputes
    # anyway (12n bytes), so writing the gradient in the forward would cost 4n and hold
    # n elements until the backward for nothing. A compiled graph also recomputes.
    compute_grad = (
        code != _NONE
        and input.device.type == "cpu"
        and torch.is_grad_enabled()
        and (input.requires_grad or (target.requires_grad and name in _DIFFERENCE_LOSSES))
        and not torch.compiler.is_compiling()
    )
    loss, _ = getattr(torch.ops.ssl_fast, name)(input, target, *params, code, weight, compute_grad)
    if mask is not None and reduction == "none" and loss.dim() > mask.dim():
        loss = loss.flatten(mask.dim()).sum(-1)
    return loss


def smooth_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Smooth-L1 (Huber / beta) loss with torch's semantics, fused in one pass.

    input, target: float16/bfloat16/float32/float64 tensors that broadcast together
    (computed and accumulated in float32 for 16-bit dtypes). beta >= 0; beta == 0 is L1.
    reduction: 'mean' (over all elements), 'sum' or 'none'.
    mask: optional bool/float tensor over the leading dims of the loss (e.g. [N, L] for
    [N, L, D] patches): the loss is averaged over the trailing dims, then over the masked
    positions ('mean'), summed over them ('sum'), or returned per position ('none'). The
    mask receives no gradient; an all-zero mask gives NaN for 'mean', as 0/0.
    """
    if isinstance(beta, torch.Tensor) and beta.numel() == 1 and beta.dtype != torch.bool:
        beta = beta.item()  # as torch's smooth_l1_loss, which reads it as a number (no gradient)
    beta = _checks.real("smooth_l1_loss", "beta", beta, ">= 0", lambda b: b >= 0)
    input, target, shape = _validate("smooth_l1_loss", input, target, reduction, mask)
    if not _ext.use_kernel("smooth_l1_loss", input):
        return reference.smooth_l1_loss(input, target, beta, reduction, mask)
    return _run("smooth_l1_loss", (beta,), input, target, shape, reduction, mask)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error with torch's semantics, fused in one pass.

    Arguments as for smooth_l1_loss (without beta).
    """
    input, target, shape = _validate("mse_loss", input, target, reduction, mask)
    if not _ext.use_kernel("mse_loss", input):
        return reference.mse_loss(input, target, reduction, mask)
    return _run("mse_loss", (), input, target, shape, reduction, mask)


def _loss_weight(name: str, what: str, w: torch.Tensor | None, input: torch.Tensor) -> torch.Tensor | None:
    """A weight or pos_weight checked as torch would (broadcast to the input, no gradient),
    in the kernel's accumulation dtype."""
    if w is None:
        return None
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        got = getattr(w, "dtype", type(w).__name__)
        raise TypeError(f"{name}: {what} must be a floating-point tensor, got {got}")
    if w.device != input.device:
        raise ValueError(f"{name}: {what} is on {w.device} but input is on {input.device}")
    try:
        fits = torch.broadcast_shapes(w.shape, input.shape) == input.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: {what} of shape {tuple(w.shape)} does not broadcast to the input shape "
            f"{tuple(input.shape)}"
        )
    if w.requires_grad and torch.is_grad_enabled():
        # torch's own words, so that code that matches them keeps working.
        raise RuntimeError(
            f"The function '{name}' is not differentiable with respect to argument '{what}'. "
            "This input cannot have requires_grad True."
        )
    return w.to(_accumulate_dtype(input.dtype))


def _check_same_size(name: str, input: torch.Tensor, target: torch.Tensor) -> None:
    if isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and target.shape != input.shape:
        raise ValueError(
            f"{name}: target of shape {tuple(target.shape)} must have the input's shape "
            f"{tuple(input.shape)}, as in torch"
        )


def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy of probabilities with torch's semantics, fused in one pass.

    input: probabilities in [0, 1] (anything else, NaN included, is an error, as in torch);
    target: the same shape and dtype, soft labels in [0, 1]. float16/bfloat16/float32/float64,
    computed and accumulated in float32 for 16-bit dtypes. Each log term is clamped at -100
    and the input gradient is (input - target) / max(input (1 - input), 1e-12), as in torch.
    weight: optional tensor broadcasting to the input, scaling each element (no gradient).
    reduction: 'mean' (over all elements), 'sum' or 'none'.
    """
    name = "binary_cross_entropy"
    _check_same_size(name, input, target)
    if isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and input.dtype != target.dtype:
        raise TypeError(f"{name}: target dtype {target.dtype} differs from input dtype {input.dtype}")
    input, target, shape = _validate(name, input, target, reduction, None)
    w = _loss_weight(name, "weight", weight, input)
    if not _ext.use_kernel(name, input):
        return reference.binary_cross_entropy(input, target, reduction, weight)
    return _run(name, (), input, target, shape, reduction, None, w)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of logits with torch's semantics, fused in one pass.

    loss = -w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], computed stably for any
    logit x (+-inf and NaN give what torch gives). input, target: the same shape,
    float16/bfloat16/float32/float64; as in torch, the input is cast to the target's dtype,
    which is the loss's (16-bit dtypes are computed and accumulated in float32). target: soft
    labels, usually in [0, 1] (not checked, as in torch). weight: optional, broadcasting to
    the input. pos_weight p: optional weight of the positive term, broadcasting to the input
    (a [C] tensor weighs the classes of the last dim). Neither gets a gradient (torch refuses
    one). reduction: 'mean', 'sum' or 'none'.
    """
    name = "binary_cross_entropy_with_logits"
    _check_same_size(name, input, target)
    dtype = getattr(target, "dtype", None)
    input, target, shape = _validate(name, input, target, reduction, None)
    input, target = input.to(dtype), target.to(dtype)  # torch computes in the target's dtype
    w = _loss_weight(name, "weight", weight, input)
    pw = _loss_weight(name, "pos_weight", pos_weight, input)
    if not _ext.use_kernel(name, input):
        return reference.binary_cross_entropy_with_logits(input, target, pos_weight, reduction, weight)
    return _run(name, (pw,), input, target, shape, reduction, None, w)


for _name in OPS:
    _ext.register(_name, _fake, _backward, partial(_setup_context, _name))
    _ext.register(f"{_name}_backward", _fake_backward)
