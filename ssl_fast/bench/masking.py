"""Masking: ssl_fast.mask_tokens against transformers' DataCollatorForLanguageModeling.torch_mask_tokens,
and ssl_fast.random_masking against MAE's argsort-based random_masking.

The "torch" provider is the PyTorch code that users run today: transformers' masking
(skipped with a message when transformers is not installed) and MAE's. Ops:
  mask_tokens      with a precomputed special_tokens_mask (both sides read it)
  mask_tokens_ids  without one: transformers asks the tokenizer row by row, ssl_fast takes
                   the special ids
  random_masking   mask_ratio 0.75 on [N, L, D] patches
Both maskers modify the ids in place, as the collators do.
"""

from __future__ import annotations

import functools
import math

import torch

import ssl_fast

from .harness import OpBench, Shape

VOCAB = 30522  # BERT's vocabulary: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
MASK_RATIO = 0.75


def token_batch(shape: Shape, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """[CLS] words [SEP] [PAD]...: rows of random length in [L/2, L], and their special-tokens mask."""
    rows, length = shape
    ids = torch.randint(SEP + 2, VOCAB, shape, dtype=dtype)
    lengths = torch.randint(length // 2, length + 1, (rows,))
    ids[torch.arange(length) >= lengths[:, None]] = PAD
    ids[:, 0], ids[torch.arange(rows), lengths - 1] = CLS, SEP
    special = torch.isin(ids, torch.tensor(SPECIALS, dtype=dtype))
    return [ids.to(device), special.to(device)]


def patches(shape: Shape, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    return [torch.randn(shape, dtype=dtype, device=device)]


@functools.cache
def _transformers_collator():
    """DataCollatorForLanguageModeling on a BERT-sized word-level tokenizer built in memory."""
    from tokenizers import Tokenizer, models
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    names = {PAD: "[PAD]", UNK: "[UNK]", CLS: "[CLS]", SEP: "[SEP]", MASK: "[MASK]"}
    vocab = {names.get(i, f"w{i}"): i for i in range(VOCAB)}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)


def transformers_precomputed(ids: torch.Tensor, special: torch.Tensor):
    return _transformers_collator().torch_mask_tokens(ids, special_tokens_mask=special)


def transformers_tokenizer_mask(ids: torch.Tensor, special: torch.Tensor):
    return _transformers_collator().torch_mask_tokens(ids)


def ssl_fast_precomputed(ids: torch.Tensor, special: torch.Tensor):
    return ssl_fast.mask_tokens(ids, MASK, VOCAB, special_tokens_mask=special, inplace=True)


def ssl_fast_special_ids(ids: torch.Tensor, special: torch.Tensor):
    return ssl_fast.mask_tokens(ids, MASK, VOCAB, special_token_ids=SPECIALS, inplace=True)


def mae_random_masking(x: torch.Tensor):
    """MAE's algorithm (models_mae.py): uniform noise, argsort, argsort of the argsort, gathers."""
    n, length, dim = x.shape
    len_keep = int(length * (1 - MASK_RATIO))
    noise = torch.rand(n, length, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :len_keep].unsqueeze(-1).repeat(1, 1, dim))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def ssl_fast_random_masking(x: torch.Tensor):
    return ssl_fast.random_masking(x, MASK_RATIO)


def mask_tokens_bytes(mode: str, shape: Shape, element_size: int) -> int:
    """Read the ids and the 1-byte mask, write the ids and int64 labels."""
    return math.prod(shape) * (2 * element_size + 1 + 8)


def random_masking_bytes(mode: str, shape: Shape, element_size: int) -> int:
    """Read and write the kept patches, write the float32 mask and int64 ids_restore."""
    n, length, dim = shape
    return 2 * n * int(length * (1 - MASK_RATIO)) * dim * element_size + n * length * (4 + 8)


TOKEN_CASES = {
    "cpu": (((256, 512), "int64"), ((64, 4096), "int64")),
    "cuda": (((256, 512), "int64"), ((64, 4096), "int64"), ((4096, 4096), "int64")),
}
PATCH_CASES = {
    "cpu": (((256, 196, 768), "float32"), ((256, 1024, 768), "float32")),
    "cuda": (((256, 196, 768), "float32"), ((256, 1024, 768), "float32")),
}
_HERE = "ssl_fast.bench.masking"
# mask_tokens with a precomputed special-tokens mask, and with the special ids alone.
BENCHES = [
    OpBench(
        name,
        {"torch": f"{_HERE}:{peer}", "ssl_fast": f"{_HERE}:{ours}"},
        TOKEN_CASES,
        mask_tokens_bytes,
        modes=("forward",),
        make_inputs=token_batch,
        requires={"torch": "transformers"},
    )
    for name, peer, ours in (
        ("mask_tokens", "transformers_precomputed", "ssl_fast_precomputed"),
        ("mask_tokens_ids", "transformers_tokenizer_mask", "ssl_fast_special_ids"),
    )
] + [
    OpBench(
        "random_masking",
        {"torch": f"{_HERE}:mae_random_masking", "ssl_fast": f"{_HERE}:ssl_fast_random_masking"},
        PATCH_CASES,
        random_masking_bytes,
        modes=("forward",),
        make_inputs=patches,
    ),
]


def test_masking(case, measure):
    measure(case)
