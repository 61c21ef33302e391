"""MLMCollator: a drop-in for transformers' DataCollatorForLanguageModeling on ssl_fast.mask_tokens.

It needs no transformers: any tokenizer object with mask_token_id, pad_token_id,
all_special_ids and a length (the vocabulary size) serves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import _checks
from .ops.masking import _mask_tokens, _seed

# Padding values of the keys a tokenizer returns; other per-token keys are padded with 0.
_PAD_VALUES = {"attention_mask": 0, "special_tokens_mask": 1, "token_type_ids": 0}
_WORKER_STEP = 0x9E3779B97F4A7C15  # an odd 64-bit constant: distinct seeds for distinct workers


def _tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"MLMCollator: {where} must be numbers, got {value!r}") from None


def _integral(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex())  # bools count as integers here


def _rows(values: Sequence[Any], key: str) -> list[torch.Tensor]:
    """The examples' values of one key as tensors of one dtype: int64 for integers and bools,
    and for empty sequences, which torch alone would make float32 whatever their neighbours;
    the promoted dtype where some are floating-point (not allowed in input_ids)."""
    rows = [_tensor(v, f"example {i}'s {key}") for i, v in enumerate(values)]
    floats = [r.dtype for r in rows if r.numel() and not _integral(r)]
    if key == "input_ids":
        for i, r in enumerate(rows):
            if r.dim() != 1:
                raise ValueError(
                    f"MLMCollator: example {i}'s input_ids must be a 1-D sequence of token ids, "
                    f"got shape {tuple(r.shape)}"
                )
            if r.numel() and (r.dtype == torch.bool or not _integral(r)):
                raise TypeError(
                    f"MLMCollator: example {i}'s input_ids must be integer token ids, got dtype {r.dtype}"
                )
    dtype = functools.reduce(torch.promote_types, floats) if floats else torch.int64
    return [r.to(dtype) for r in rows]


class MLMCollator:
    """Pads a list of examples into a batch and masks it for masked language modelling.

    Arguments as transformers' DataCollatorForLanguageModeling: with mlm=True, tokens are
    selected with mlm_probability (never special tokens or padding), and of those
    mask_replace_prob become tokenizer.mask_token_id, random_replace_prob a random id of
    [0, len(tokenizer)), the rest stay; labels are -100 where not selected. mlm=False gives
    labels = input_ids with padding set to -100. examples: dicts with "input_ids" (and
    e.g. attention_mask, special_tokens_mask, which is used for the masking and removed),
    or plain id sequences; a sequence may be a list, a tuple, a numpy array or a tensor of
    any integer dtype, and may be empty. Returns a dict of int64 tensors [B, L] (L the longest
    example, rounded up to pad_to_multiple_of; other keys with float values stay floating-point).

    With seed, each DataLoader worker masks with its own key derived from the seed and its
    worker id, and each batch with the next offset, so that the batches are reproducible;
    without, the seeds come from torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm: bool = True,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
        return_tensors: str = "pt",
    ) -> None:
        if return_tensors != "pt":
            raise ValueError(f"MLMCollator: only return_tensors='pt' is supported, got {return_tensors!r}")
        if mlm and getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError(
                "MLMCollator: the tokenizer has no mask token (mask_token_id is None), which masked language "
                "modelling needs; pass mlm=False to train causal language modelling"
            )
        name = "MLMCollator"
        mlm_probability = _checks.probability(name, "mlm_probability", mlm_probability)
        mask_replace_prob = _checks.probability(name, "mask_replace_prob", mask_replace_prob)
        random_replace_prob = _checks.probability(name, "random_replace_prob", random_replace_prob)
        if mask_replace_prob + random_replace_prob > 1:
            raise ValueError(
                f"MLMCollator: mask_replace_prob + random_replace_prob must be at most 1, got "
                f"{mask_replace_prob} + {random_replace_prob}"
            )
        if pad_to_multiple_of is not None:
            pad_to_multiple_of = _checks.integer(
                name, "pad_to_multiple_of", pad_to_multiple_of, ">= 1", lambda n: n >= 1
            )
        if seed is not None:
            seed = _checks.integer(name, "seed", seed)
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.return_tensors = return_tensors
        self._batches = 0  # the Philox offset of the next batch, counted per worker

    # -- padding

    def _pad_rows(self, rows: Sequence[torch.Tensor], value: int | None) -> torch.Tensor:
        length = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if all(len(r) == length for r in rows):
            return torch.stack(list(rows))
        if value is None:
            raise ValueError(
                f"MLMCollator: the examples need padding, but the tokenizer "
                f"({type(self.tokenizer).__name__}) has no pad token (pad_token_id is None)"
            )
        out = torch.full((len(rows), length), value, dtype=rows[0].dtype)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, r in enumerate(rows):
            if left:
                out[i, length - len(r) :] = r
            else:
                out[i, : len(r)] = r
        return out

    def _batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("MLMCollator: empty batch (no examples)")
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        if not isinstance(examples[0], Mapping):
            return {"input_ids": self._pad_rows(_rows(examples, "input_ids"), pad_id)}
        keys = list(examples[0])
        if "input_ids" not in keys:
            raise ValueError(f"MLMCollator: the examples must have 'input_ids', got keys {keys}")
        names = getattr(self.tokenizer, "model_input_names", ("input_ids", "attention_mask"))
        if "attention_mask" in names and "attention_mask" not in keys:
            keys.append("attention_mask")
        batch = {}
        for key in keys:
            if key == "attention_mask" and "attention_mask" not in examples[0]:
                rows = [torch.ones(len(e["input_ids"]), dtype=torch.int64) for e in examples]
            else:
                rows = _rows([e[key] for e in examples], key)
            if rows[0].dim() == 0:  # a per-example value, e.g. a class label
                batch[key] = torch.stack(rows)
            else:
                batch[key] = self._pad_rows(rows, pad_id if key == "input_ids" else _PAD_VALUES.get(key, 0))
        return batch

    # -- masking

    def _key(self) -> tuple[int, int]:
        """(seed, offset) of the next batch."""
        offset, self._batches = self._batches, self._batches + 1
        if self.seed is None:
            return _seed("MLMCollator", None, None), 0
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        return _seed("MLMCollator", self.seed + worker * _WORKER_STEP, None), offset

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self._batch(examples)
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        ids = batch["input_ids"]
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        if not self.mlm:
            labels = ids.clone()
            if pad_id is not None:
                labels[labels == pad_id] = -100
            batch["labels"] = labels
            return batch
        seed, offset = self._key()
        # A precomputed mask (padded with 1) says it all; else the special ids, padding included.
        special_ids = None
        if special_tokens_mask is None:
            special_ids = list(self.tokenizer.all_special_ids) + ([pad_id] if pad_id is not None else [])
        _, batch["labels"] = _mask_tokens(
            ids,
            self.tokenizer.mask_token_id,
            len(self.tokenizer),
            self.mlm_probability,
            self.mask_replace_prob,
            self.random_replace_prob,
            special_ids,
            special_tokens_mask,
            False,
            False,
            True,
            None,
            seed,
            offset,
        )
        return batch
