"""SigLIP's sigmoid loss of two towers (image, text), fused and tiled.

One op, ssl_fast::siglip, sums softplus(-y_ij (scale * img_i . txt_j + bias)) over every
pair tile by tile (csrc/contrastive/siglip_cpu.cpp), so that the N x N logits never exist.
When the inputs need gradients on the CPU, the same pass computes them, so that the usual
`loss.backward()` (grad_output == 1) costs nothing more; otherwise the backward op
recomputes the tiles. With create_graph=True the backward runs the PyTorch formula
instead, so that second derivatives exist.
"""

from __future__ import annotations

import torch

from .. import _checks, _ext, distributed, reference
from .autograd import grad_output_is_one

OPS = ("siglip", "siglip_backward")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake(img, txt, scale, bias, offset, compute_grad):
    grads = _fake_backward(None, img, txt, scale, bias, offset, compute_grad)
    return (img.new_empty((), dtype=_acc_dtype(img.dtype)), *grads)


def _fake_backward(grad, img, txt, scale, bias, offset, mask):
    sources = (img, txt, scale, bias)
    return tuple(s.new_empty(s.shape if want else (0,)) for s, want in zip(sources, mask, strict=True))


def _setup_context(ctx, inputs, output):
    img, txt, scale, bias, offset, compute_grad = inputs
    ctx.offset = offset
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*output[1:])
    ctx.save_for_backward(img, txt, scale, bias)
    # Held outside save_for_backward and dropped by the first backward, so that autograd
    # can adopt them as the inputs' .grad; a second backward (retain_graph=True) recomputes.
    ctx.forward_grads = output[1:] if any(compute_grad) else None
    ctx.computed = tuple(compute_grad)


def _backward(ctx, grad_loss, *_grads_of_grads):
    img, txt, scale, bias = ctx.saved_tensors
    saved, ctx.forward_grads = ctx.forward_grads, None
    mask = list(ctx.needs_input_grad[:4])
    none = (None, None)
    if grad_loss is None:
        return (None,) * 4 + none
    if torch.is_grad_enabled():  # create_graph=True: gradients that can be differentiated again
        return _reference_grads(ctx, grad_loss, mask) + none
    usable = saved is not None and all(c or not m for c, m in zip(ctx.computed, mask, strict=True))
    if usable and grad_output_is_one(grad_loss):
        grads = saved
    else:  # recomputed rather than scaled, so that 16-bit gradients are rounded once
        grads = torch.ops.ssl_fast.siglip_backward(grad_loss, img, txt, scale, bias, ctx.offset, mask)
    return tuple(g if m else None for g, m in zip(grads, mask, strict=True)) + none


def _reference_grads(ctx, grad_loss, mask) -> tuple:
    """Gradients through the materialised formula, recorded for higher-order autograd."""
    img, txt, scale, bias = ctx.saved_tensors
    inputs = [t for t, need in zip((img, txt, scale, bias), mask, strict=True) if need]
    with torch.enable_grad():
        loss = reference.siglip_loss(img, txt, scale, bias, ctx.offset, _acc_dtype(img.dtype))
        found = iter(torch.autograd.grad(loss, inputs, grad_loss, create_graph=True))
    return tuple(next(found) if need else None for need in mask)


_ext.register("siglip", _fake, _backward, _setup_context)
_ext.register("siglip_backward", _fake_backward)


# ----------------------------------------------------------------- the functional form


def _check_features(name: str, img, txt) -> None:
    for what, t in (("image_features", img), ("text_features", txt)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {what} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name}: {what} must be 2-D [batch, features], got shape {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError(f"{name}: {what} is an empty batch (shape {tuple(t.shape)})")
        if t.shape[1] == 0:
            raise ValueError(f"{name}: {what} has no features (shape {tuple(t.shape)})")
    if img.shape != txt.shape:
        raise ValueError(
            f"{name}: image_features and text_features must have the same shape (pair i is image i "
            f"with text i), got {tuple(img.shape)} and {tuple(txt.shape)}"
        )
    if img.device != txt.device:
        raise ValueError(f"{name}: text_features is on {txt.device} but image_features is on {img.device}")


def _scalar(name: str, what: str, value, like: torch.Tensor) -> torch.Tensor:
    """A one-element tensor (kept in the graph, as a 0-dim view) or a real number (a constant)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise TypeError(
                f"{name}: {what} must be a one-element floating-point tensor or a real number, got a "
                f"{value.dtype} tensor of shape {tuple(value.shape)}"
            )
        if value.device != like.device and value.device.type != "cpu":
            raise ValueError(f"{name}: {what} is on {value.device} but image_features is on {like.device}")
        if value.device.type == "cpu" and not torch.compiler.is_compiling():
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: {what} must be finite, got {value.item()}")
        return value.reshape(())
    number = _checks.real(name, what, value, "finite", lambda v: abs(v) < float("inf"))
    return torch.tensor(number, dtype=_acc_dtype(like.dtype))


def siglip(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    gather_distributed: bool = False,
    group=None,
) -> torch.Tensor:
    """SigLIP's sigmoid loss (open_clip's SigLipLoss) of N image-text pairs.

    image_features, text_features: [N, D], taken as they are (as open_clip, which expects
    the towers to have normalised them: ssl_fast does not normalise). logit_scale: the
    multiplier of the logits itself (open_clip passes its learnable log-scale already
    exponentiated); logit_bias: added to them (None: 0). Each may be a one-element tensor,
    which receives a gradient, or a real number; it must be finite, which is checked except
    on a GPU (reading it there would make the host wait: a non-finite one gives a non-finite
    loss). On a GPU neither the loss nor its backward makes the host wait, unless a CPU
    tensor among them requires a gradient (which is copied back from the GPU). The loss is
    -(1 / N) sum_ij log sigmoid(y_ij (logit_scale * img_i . txt_j + logit_bias)), y = +1 for
    i = j and -1 elsewhere. Inputs may be float16, bfloat16 (accumulated in float32),
    float32 or float64; the loss has their dtype. The N x N logits are never stored.

    gather_distributed: under torch.distributed, each rank's images are scored against the
    texts of all ranks of `group` (equal batch sizes), as open_clip's SigLipLoss with
    world_size > 1 does; the loss is the sum over this rank's images divided by its N, so
    that the mean over ranks (DDP's averaging) is the loss of one process holding the
    global batch. Gradients reach every rank's texts.
    """
    name = "siglip"
    _check_features(name, image_features, text_features)
    if gather_distributed:
        distributed.check_available(name)
    dtype = torch.promote_types(image_features.dtype, text_features.dtype)
    img, txt = image_features.to(dtype), text_features.to(dtype)
    scale = _scalar(name, "logit_scale", logit_scale, img)
    bias = _scalar(name, "logit_bias", 0.0 if logit_bias is None else logit_bias, img)
    offset = 0
    if gather_distributed and distributed.world_size(group) > 1:
        txt = distributed.gather(txt, group)
        offset = len(img) * distributed.rank(group)
    if not _ext.use_kernel("siglip", img):
        return reference.siglip_loss(img, txt, scale, bias, offset, dtype)
    # Only where grad_output can be read for free (a CPU scalar): elsewhere the backward
    # recomputes anyway. A compiled graph also recomputes.
    compute = img.device.type == "cpu" and torch.is_grad_enabled() and not torch.compiler.is_compiling()
    compute_grad = [compute and t.requires_grad for t in (img, txt, scale, bias)]
    loss, *_ = torch.ops.ssl_fast.siglip(img, txt, scale, bias, offset, compute_grad)
    return loss.to(dtype)
