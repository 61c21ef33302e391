"""Pure-PyTorch references: the fallback where no kernel serves a tensor, and the test oracle.

Each function has the semantics of its fused counterpart in ssl_fast.ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_reduce(loss: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Reduce an elementwise loss. With a mask over the leading dims of `loss`, the loss
    is averaged over the trailing dims, weighted by the mask, then summed ('sum'),
    divided by the mask's sum ('mean'), or returned per position ('none')."""
    if mask is None:
        if reduction == "none":
            return loss
        return loss.sum() if reduction == "sum" else loss.mean()
    per_position = loss.flatten(mask.dim()).mean(-1) if loss.dim() > mask.dim() else loss
    weight = mask.detach().to(per_position.dtype)
    weighted = per_position * weight
    if reduction == "none":
        return weighted
    return weighted.sum() if reduction == "sum" else weighted.sum() / weight.sum()


def smooth_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    input, target = torch.broadcast_tensors(input, target)
    if mask is None:
        return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)
    return masked_reduce(F.smooth_l1_loss(input, target, reduction="none", beta=beta), mask, reduction)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    input, target = torch.broadcast_tensors(input, target)
    if mask is None:
        return F.mse_loss(input, target, reduction=reduction)
    return masked_reduce(F.mse_loss(input, target, reduction="none"), mask, reduction)


def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    return F.binary_cross_entropy(input, target, weight=weight, reduction=reduction)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        input, target, weight=weight, reduction=reduction, pos_weight=pos_weight
    )


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def contrastive_lse(
    q: torch.Tensor,
    k: torch.Tensor | None,
    scale: torch.Tensor,
    exclude: torch.Tensor | None,
    col_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ssl_fast::contrastive_lse through the full logits matrix: (qn, kn, row_lse, col_lse)."""
    acc = _accumulate_dtype(q.dtype)
    qn = F.normalize(q.to(acc), dim=1)
    kn = qn.new_empty(0) if k is None else F.normalize(k.to(acc), dim=1)
    logits = (qn @ (qn if k is None else kn).T) * scale.to(device=q.device, dtype=acc)
    if k is None:
        excluded = torch.eye(len(q), dtype=torch.bool, device=q.device)
    elif exclude is not None:
        excluded = torch.zeros(logits.shape, dtype=torch.bool, device=q.device)
        rows = torch.nonzero(exclude >= 0).squeeze(1)
        excluded[rows, exclude[rows]] = True
    else:
        excluded = None
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    row = torch.logsumexp(logits, 1)
    col = torch.logsumexp(logits, 0) if col_lse and k is not None else qn.new_empty(0)
    return qn, kn, row, col


def nt_xent(
    z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.5, reduction: str = "mean"
) -> torch.Tensor:
    """The materialised NT-Xent formula: all 2N x 2N cosine similarities, the diagonal masked,
    cross-entropy against each row's positive (the other view of the same sample)."""
    n = len(z0)
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, labels, reduction=reduction)


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.07,
    labels: torch.Tensor | None = None,
    symmetric: bool = False,
    logit_scale: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The materialised InfoNCE / CLIP formula: cross-entropy of the query x key cosine
    logits against `labels`; symmetric also lets each positive key pick its query."""
    scale = logit_scale.exp() if logit_scale is not None else 1.0 / temperature
    logits = (F.normalize(query, dim=1) @ F.normalize(key, dim=1).T) * scale
    if labels is None:
        labels = torch.arange(len(query), device=query.device)
    loss = F.cross_entropy(logits, labels, reduction="none")
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T[labels], torch.arange(len(query), device=query.device),
                                       reduction="none")) / 2
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.mean()


def sup_con(
    z: torch.Tensor, labels: torch.Tensor | None = None, temperature: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """The materialised SupCon (L_out) formula: all M x M cosine logits, an M x M mask of
    positives; each row's loss is its log-sum-exp over the other rows minus the mean logit of
    its positives; a row without a positive or a negative is 0 and left out of the mean."""
    shape = z.shape[:-1]
    if labels is None:
        labels = torch.arange(z.shape[0], device=z.device)
    if z.dim() == 3:
        labels, z = labels.repeat_interleave(z.shape[1]), z.flatten(0, 1)
    zn = F.normalize(z, dim=1)
    logits = (zn @ zn.T) / temperature
    itself = torch.eye(len(z), dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == labels[None, :]) & ~itself
    lse = torch.logsumexp(logits.masked_fill(itself, float("-inf")), 1)
    count = positive.sum(1)
    rows = lse - torch.where(positive, logits, 0).sum(1) / count.clamp(min=1)
    has_loss = (count > 0) & (count < len(z) - 1)
    rows = torch.where(has_loss, rows, 0)
    if reduction == "mean":
        return rows.sum() / has_loss.sum().clamp(min=1)
    return _reduce(rows, reduction).reshape(shape if reduction == "none" else ())


def dcl(
    z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.1, weight_fn=None, reduction: str = "mean"
) -> torch.Tensor:
    """The materialised DCL formula: the 2N x 2N cosine logits with each row's own and positive
    entries masked out of its log-sum-exp, minus its (weighted) positive logit."""
    n = len(z0)
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = (z @ z.T) / temperature
    rows = torch.arange(2 * n, device=z.device)
    partner = (rows + n) % (2 * n)
    excluded = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    excluded[rows, partner] = True
    pos = logits[rows, partner]
    if weight_fn is not None:
        z0n, z1n = z[:n], z[n:]
        pos = pos * torch.cat([weight_fn(z0n, z1n).expand(n), weight_fn(z1n, z0n).expand(n)])
    return _reduce(torch.logsumexp(logits.masked_fill(excluded, float("-inf")), 1) - pos, reduction)


def siglip_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    offset: int = 0,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The materialised SigLIP formula (open_clip's SigLipLoss): the rows x cols logits
    scale * img txt^T + bias, labels +1 at (i, i + offset) and -1 elsewhere, -log sigmoid of
    their products summed and divided by the rows; computed in `dtype` (default: img's)."""
    dtype = dtype or img.dtype
    logits = logit_scale.to(dtype) * (img.to(dtype) @ txt.to(dtype).T) + logit_bias.to(dtype)
    rows = torch.arange(len(img), device=img.device)
    labels = -torch.ones_like(logits)
    positive = rows + offset < len(txt)
    labels[rows[positive], rows[positive] + offset] = 1
    return -F.logsigmoid(labels * logits).sum() / len(img)


# -- masking: Philox-4x32-10 in int64 arithmetic, bit for bit the generator of csrc/common/philox.h

_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
_U32 = 0xFFFFFFFF
STREAM_SELECT, STREAM_REPLACE, STREAM_WORD = 0, 1, 2


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a * b for a 32-bit constant a and 32-bit values b, with
    partial products below 2^49 so that int64 never overflows."""
    p_low, p_high = b * (a & 0xFFFF), b * (a >> 16)  # a * b = p_high * 2^16 + p_low
    return (p_high + (p_low >> 16)) >> 16, (p_low + ((p_high & 0xFFFF) << 16)) & _U32


def philox(counter: tuple, key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox-4x32-10 of the counter words (int64 tensors or ints holding 32-bit values,
    broadcast together) under a 64-bit key given as two 32-bit words."""
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) for c in counter))
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo(_PHILOX_MUL[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_MUL[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_WEYL[0]) & _U32, (k1 + _PHILOX_WEYL[1]) & _U32
    return [c0, c1, c2, c3]


def _key(seed: int) -> tuple[int, int]:
    seed %= 1 << 64
    return seed & _U32, seed >> 32


def _indexed(index: torch.Tensor, stream: int, seed: int, offset: int) -> list[torch.Tensor]:
    return philox((index & _U32, index >> 32, stream, offset % (1 << 32)), _key(seed))


def selection_words(index: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """The 32-bit selection word of each flat element index: word index % 4 of the
    Philox output for counter index // 4."""
    words = torch.stack(_indexed(index // 4, STREAM_SELECT, seed, offset), -1)
    return words.gather(-1, (index % 4).unsqueeze(-1)).squeeze(-1)


def _below(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """floor(n * (hi * 2^32 + lo) / 2^64), as philox::below."""
    return (hi * n + ((lo * n) >> 32)) >> 32


def _check_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """ValueError unless every id lies in [0, vocab_size), with the kernels' message."""
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        ids = input_ids.reshape(-1)
        bad = ids[(ids < 0) | (ids >= vocab_size)][0].item()
        raise ValueError(
            f"mask_tokens: input_ids holds ids outside the vocabulary [0, {vocab_size}), e.g. {bad} "
            "(check_ids=False lets them pass through)"
        )


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor | None,
    special_ids: torch.Tensor | None,
    word_ids: torch.Tensor | None,
    mask_token_id: int,
    vocab_size: int,
    select_threshold: int,
    mask_threshold: int,
    random_threshold: int,
    mlm_probability: float,
    exact_count: bool,
    exclude_special_from_random: bool,
    check_ids: bool,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ops.ssl_fast.mask_tokens in PyTorch, with the same bits (see csrc/ops.cpp)."""
    if check_ids:
        _check_ids(input_ids, vocab_size)
    ids = input_ids.reshape(-1).long()
    length = input_ids.shape[-1]
    index = torch.arange(ids.numel(), device=ids.device)
    special = torch.zeros_like(ids, dtype=torch.bool)
    if special_tokens_mask is not None:
        special |= special_tokens_mask.reshape(-1)
    if special_ids is not None and special_ids.numel():
        special |= torch.isin(ids, special_ids)
    if word_ids is not None:
        words = word_ids.reshape(-1)
        special |= words < 0
        u = philox((words & _U32, (index // length) & _U32, STREAM_WORD, offset % (1 << 32)), _key(seed))[0]
    else:
        u = selection_words(index, seed, offset)
    if exact_count:
        # The round(p * m) non-special tokens of each row with the smallest (u, position).
        keys = torch.where(special, torch.iinfo(torch.int64).max, u * length + index % length)
        keys = keys.view(-1, length)
        rank = torch.empty_like(keys).scatter_(
            1, keys.argsort(dim=1), torch.arange(length, device=ids.device).expand_as(keys)
        )
        count = torch.round((~special).view(-1, length).sum(1, dtype=torch.float64) * mlm_probability)
        selected = (rank < count.long().unsqueeze(1)).reshape(-1) & ~special
    else:
        selected = ~special & (u < select_threshold)
    r0, r1, r2, _ = _indexed(index, STREAM_REPLACE, seed, offset)
    if not exact_count and word_ids is None:
        # Selected by its own word u, uniform below select_threshold: u decides, on scaled thresholds.
        r0 = u
        mask_threshold = (select_threshold * mask_threshold) >> 32
        random_threshold = (select_threshold * random_threshold) >> 32
    n_special = 0 if special_ids is None else special_ids.numel()
    if exclude_special_from_random:
        random_ids = _below(r1, r2, vocab_size - n_special)
        for s in special_ids.tolist():  # sorted: step over the special ids at or below
            random_ids += random_ids >= s
    else:
        random_ids = _below(r1, r2, vocab_size)
    kept_or_random = torch.where(r0 < random_threshold, random_ids, ids)
    replaced = torch.where(r0 < mask_threshold, mask_token_id, kept_or_random)
    masked = torch.where(selected, replaced, ids).to(input_ids.dtype).view(input_ids.shape)
    labels = torch.where(selected, ids, -100).view(input_ids.shape)
    return masked, labels


def random_masking(
    x: torch.Tensor, len_keep: int, seed: int, offset: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's random masking with Philox noise: the len_keep positions of each row with
    the smallest (noise word, position), in that order; mask 1 = removed; ids_restore
    un-shuffles."""
    n, length, dim = x.shape
    index = torch.arange(n * length, device=x.device)
    noise = (selection_words(index, seed, offset) * length + index % length).view(n, length)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = torch.empty_like(ids_shuffle).scatter_(
        1, ids_shuffle, torch.arange(length, device=x.device).expand(n, length)
    )
    kept = x.gather(1, ids_shuffle[:, :len_keep, None].expand(-1, -1, dim))
    mask = (ids_restore >= len_keep).float()
    return kept, mask, ids_restore
