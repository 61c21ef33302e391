"""Masking for masked modelling: MLM token masking and MAE patch masking.

Both ops draw their random bits from Philox-4x32-10 keyed by a 64-bit seed and indexed
by element (csrc/common/philox.h), so the CPU kernel, the CUDA kernel and the PyTorch
reference (ssl_fast.reference) give the same bits for the same seed, whatever the thread
count or launch layout. Without a seed, one is drawn from the given torch.Generator or
torch's global one: torch.manual_seed makes runs reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .. import _checks, _ext, reference

OPS = ("mask_tokens", "mask_tokens_", "random_masking")
_ONE = 1 << 32  # probabilities become thresholds on 32-bit random words


def mlm_probabilities(
    name: str, mlm_probability: float, mask_replace_prob: float, random_replace_prob: float
) -> tuple[float, float, float]:
    """The three probabilities of BERT-style masking, checked: each in [0, 1], and the mask
    and random shares of the selected tokens at most 1 together."""
    p = _checks.probability(name, "mlm_probability", mlm_probability)
    p_mask = _checks.probability(name, "mask_replace_prob", mask_replace_prob)
    p_random = _checks.probability(name, "random_replace_prob", random_replace_prob)
    if p_mask + p_random > 1:
        raise ValueError(
            f"{name}: mask_replace_prob + random_replace_prob must be at most 1, got "
            f"{p_mask} + {p_random} = {p_mask + p_random}"
        )
    return p, p_mask, p_random


def _threshold(p: float) -> int:
    """floor(p * 2^32): a 32-bit word u is below it with probability p (to within 2^-32)."""
    return min(int(p * _ONE), _ONE)


def _same_shape(
    what: str, t: torch.Tensor | None, ids: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | None:
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.shape != ids.shape:
        raise ValueError(
            f"mask_tokens: {what} of shape {tuple(t.shape)} does not match input_ids of shape "
            f"{tuple(ids.shape)}"
        )
    return t.to(device=ids.device, dtype=dtype)


def _special_ids(ids: Iterable[int] | torch.Tensor | None, vocab_size: int, device) -> torch.Tensor | None:
    """Sorted unique special ids inside the vocabulary (ids outside it cannot occur)."""
    if ids is None:
        return None
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    values = [_checks.integer("mask_tokens", f"special_token_ids[{i}]", v) for i, v in enumerate(values)]
    inside = sorted({v for v in values if 0 <= v < vocab_size})
    return torch.tensor(inside, dtype=torch.int64, device=device)


def mask_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    special_token_ids: Iterable[int] | torch.Tensor | None = None,
    special_tokens_mask: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    exact_count: bool = False,
    exclude_special_from_random: bool = False,
    inplace: bool = False,
    word_ids: torch.Tensor | None = None,
    check_ids: bool = True,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking for masked language modelling, in one fused pass.

    input_ids: int64 or int32 token ids of shape [..., L] (rows of length L), each in
    [0, vocab_size). An id outside raises ValueError before anything is written (on CUDA
    the check synchronises), unless check_ids=False or inside torch.compile: then it passes
    through as in transformers' collator (kept when not selected, the label when selected,
    never a random replacement). Each token that is not special is selected with probability
    mlm_probability (or, with exact_count=True, exactly round(p * m) of the m non-special
    tokens of each row). Special tokens are those in special_token_ids, those where
    special_tokens_mask (same shape, bool or 0/1) is set, and those with word id -1; put
    the padding id among them. Of the selected tokens, mask_replace_prob become
    mask_token_id, random_replace_prob a random id uniform over [0, vocab_size) (without
    the special ids if exclude_special_from_random), and the rest stay.
    word_ids: optional [..., L] int64 word index per token (-1 for specials): the tokens
    of one word are selected together (whole-word masking).

    Returns (masked_ids, labels): masked_ids in the dtype of input_ids (input_ids itself,
    written in place, with inplace=True); labels int64, the original id where selected
    and -100 elsewhere. The output is a function of the seed alone (CPU and CUDA agree
    bit for bit); without one, a seed is drawn from `generator` or torch's global one.
    offset: in [0, 2^32), where in the seed's Philox stream the call draws: calls with one
    seed and distinct offsets draw distinct bits (MLMCollator steps it once per batch).
    """
    seed = _checks.seed("mask_tokens", seed, generator)
    offset = _checks.integer("mask_tokens", "offset", offset, "in [0, 2^32)", lambda o: 0 <= o < 1 << 32)
    name = "mask_tokens"
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"{name}: input_ids must be a Tensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"{name}: input_ids must be an int64 or int32 tensor of token ids, got dtype {input_ids.dtype}"
        )
    if input_ids.dim() == 0 or input_ids.numel() == 0:
        raise ValueError(f"{name}: empty batch: input_ids has shape {tuple(input_ids.shape)}")
    p, p_mask, p_random = mlm_probabilities(name, mlm_probability, mask_replace_prob, random_replace_prob)
    vocab_size = _checks.integer(name, "vocab_size", vocab_size, "in [1, 2^31)", lambda v: 0 < v < 1 << 31)
    mask_token_id = _checks.integer(name, "mask_token_id", mask_token_id)
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(
            f"{name}: mask_token_id {mask_token_id!r} is outside the vocabulary [0, {vocab_size})"
        )
    special_mask = _same_shape("special_tokens_mask", special_tokens_mask, input_ids, torch.bool)
    words = _same_shape("word_ids", word_ids, input_ids, torch.int64)
    if exact_count and words is not None:
        raise ValueError(f"{name}: exact_count counts tokens and does not combine with word_ids")
    specials = _special_ids(special_token_ids, vocab_size, input_ids.device)
    if exclude_special_from_random:
        if specials is None:
            raise ValueError(f"{name}: exclude_special_from_random needs special_token_ids")
        if specials.numel() >= vocab_size:
            raise ValueError(f"{name}: every id of the vocabulary is special; no random id can be drawn")
    args = (
        special_mask,
        specials,
        words,
        mask_token_id,
        vocab_size,
        _threshold(p),
        _threshold(p_mask),
        _threshold(p_mask + p_random),
        p,
        bool(exact_count),
        bool(exclude_special_from_random),
        bool(check_ids) and not torch.compiler.is_compiling(),  # a graph cannot raise on the ids' values
        seed,
        offset,
    )
    if not _ext.use_kernel("mask_tokens", input_ids):
        masked, labels = reference.mask_tokens(input_ids, *args)
        return (input_ids.copy_(masked), labels) if inplace else (masked, labels)
    if inplace:
        return input_ids, torch.ops.ssl_fast.mask_tokens_(input_ids, *args)
    return torch.ops.ssl_fast.mask_tokens(input_ids, *args)


def random_masking(
    x: torch.Tensor, mask_ratio: float, seed: int | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking of patch tokens, fused.

    x: [N, L, D] of any dtype. Keeps int(L * (1 - mask_ratio)) patches per sample, those
    with the smallest random noise, in order of increasing noise. Returns (x_kept
    [N, len_keep, D], mask [N, L] float32 with 1 = removed, ids_restore [N, L] int64 such
    that gathering [x_kept, mask tokens] along dim 1 with ids_restore un-shuffles).
    x_kept is differentiable with respect to x. Seeds as for mask_tokens.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(
            f"random_masking: x must be a tensor of shape [N, L, D], got {getattr(x, 'shape', x)!r}"
        )
    mask_ratio = _checks.probability("random_masking", "mask_ratio", mask_ratio)
    seed = _checks.seed("random_masking", seed, generator)
    len_keep = int(x.shape[1] * (1 - mask_ratio))
    if not _ext.use_kernel("random_masking", x):
        return reference.random_masking(x, len_keep, seed, 0)
    return torch.ops.ssl_fast.random_masking(x, len_keep, seed, 0)


# Outputs are contiguous whatever the layout of input_ids, as the kernels return them.
def _fake_mask_tokens(input_ids, *rest):
    return input_ids.new_empty(input_ids.shape), input_ids.new_empty(input_ids.shape, dtype=torch.int64)


def _fake_mask_tokens_(input_ids, *rest):
    return input_ids.new_empty(input_ids.shape, dtype=torch.int64)


def _fake_random_masking(x, len_keep, seed, offset):
    n, length, dim = x.shape
    return (
        x.new_empty(n, len_keep, dim),
        x.new_empty(n, length, dtype=torch.float32),
        x.new_empty(n, length, dtype=torch.int64),
    )


def _setup_random_masking(ctx, inputs, output):
    ctx.len_keep = inputs[1]
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(output[2])


def _backward_random_masking(ctx, grad_kept, _grad_mask, _grad_restore):
    (ids_restore,) = ctx.saved_tensors
    n, length = ids_restore.shape
    # Un-shuffle as MAE's decoder does: zeros for the removed patches.
    padded = torch.cat([grad_kept, grad_kept.new_zeros(n, length - ctx.len_keep, grad_kept.shape[2])], 1)
    grad_x = padded.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, grad_kept.shape[2]))
    return grad_x, None, None, None


_ext.register("mask_tokens", _fake_mask_tokens)
_ext.register("mask_tokens_", _fake_mask_tokens_)
_ext.register("random_masking", _fake_random_masking, _backward_random_masking, _setup_random_masking)
