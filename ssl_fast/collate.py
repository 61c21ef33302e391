"""MLMCollator: a drop-in for transformers' DataCollatorForLanguageModeling on ssl_fast.mask_tokens.

It needs no transformers: any tokenizer object with mask_token_id, pad_token_id,
all_special_ids and a length (the vocabulary size) serves.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import _checks
from .ops.masking import mask_tokens, mlm_probabilities

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


def _offset_rows(examples: Sequence[Mapping]) -> list[torch.Tensor]:
    """Each example's offset_mapping, a (start, end) pair of character positions per token,
    as an int64 [n, 2] tensor (an empty one is read as [0, 2])."""
    rows = _rows([e["offset_mapping"] for e in examples], "offset_mapping")
    for i, (r, e) in enumerate(zip(rows, examples, strict=True)):
        n = len(e["input_ids"])
        if tuple(r.shape) != (n, 2) and (n or r.numel()):
            raise ValueError(
                f"MLMCollator: example {i}'s offset_mapping must hold a (start, end) pair for each of its "
                f"{n} tokens, got shape {tuple(r.shape)}"
            )
    return [r.reshape(-1, 2) for r in rows]


def _return_tensors(value: Any) -> str:
    if value not in ("pt", "np"):
        raise ValueError(f"MLMCollator: return_tensors must be 'pt' or 'np', got {value!r}")
    return value


def _word_ids(offsets: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """The word index of each token of a [B, L] batch, -1 for special tokens, from the
    tokenizer's character offsets ([B, L, 2]) as transformers reads them: a token that is
    not special starts a word unless it starts where the previous token ended and that
    one is not special."""
    start, end = offsets[..., 0], offsets[..., 1]
    previous_end = torch.cat([torch.full_like(end[:, :1], -1), end[:, :-1]], 1)
    after_special = torch.cat([torch.zeros_like(special[:, :1]), special[:, :-1]], 1)
    starts_word = ~special & ((start != previous_end) | after_special)
    return torch.where(special, -1, starts_word.long().cumsum(1))


class MLMCollator:
    """Pads a list of examples into a batch and masks it for masked language modelling.

    Arguments as transformers' DataCollatorForLanguageModeling, in its order: with mlm=True,
    tokens are selected with mlm_probability (never special tokens or padding), and of those
    mask_replace_prob become tokenizer.mask_token_id, random_replace_prob a random id of
    [0, len(tokenizer)), the rest stay; labels are -100 where not selected. Ids outside
    [0, len(tokenizer)) are masked like the others. mlm=False gives labels = input_ids with
    padding set to -100. whole_word_mask=True selects whole words (each with mlm_probability)
    and, as transformers does, replaces every selected token by the mask token (with a
    warning when mask_replace_prob was below 1); the words come from each example's
    offset_mapping (tokenize with return_offsets_mapping=True): a token continues the word
    of the previous one when it starts where that one ended. examples: dicts with
    "input_ids" (and e.g. attention_mask, special_tokens_mask, which is used for the masking
    and removed, offset_mapping, removed), or plain id sequences; a sequence may be a list,
    a tuple, a numpy array or a tensor of any integer dtype, and may be empty. Returns a dict
    of int64 tensors [B, L] (L the longest example, rounded up to pad_to_multiple_of; other
    keys with float values stay floating-point), or numpy arrays with return_tensors="np"
    (also per call: collator(examples, return_tensors="np")). The examples are not modified.

    With seed, each DataLoader worker masks with its own key derived from the seed and its
    worker id, and each batch with the next offset, so that the batches are reproducible;
    without, the seeds come from torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm: bool = True,
        whole_word_mask: bool = False,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        return_tensors: str = "pt",
        seed: int | None = None,
    ) -> None:
        _return_tensors(return_tensors)
        if mlm and getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError(
                "MLMCollator: the tokenizer has no mask token (mask_token_id is None), which masked language "
                "modelling needs; pass mlm=False to train causal language modelling"
            )
        if whole_word_mask and not mlm:
            raise ValueError(
                "MLMCollator: whole_word_mask masks words for mlm=True; it does not combine with mlm=False"
            )
        name = "MLMCollator"
        mlm_probability, mask_replace_prob, random_replace_prob = mlm_probabilities(
            name, mlm_probability, mask_replace_prob, random_replace_prob
        )
        if whole_word_mask and mask_replace_prob < 1:
            warnings.warn(
                f"MLMCollator: with whole_word_mask every selected token becomes the mask token, as in "
                f"transformers: mask_replace_prob {mask_replace_prob} is set to 1, random_replace_prob to 0",
                UserWarning,
                stacklevel=2,
            )
            mask_replace_prob, random_replace_prob = 1.0, 0.0
        if pad_to_multiple_of is not None:
            pad_to_multiple_of = _checks.integer(
                name, "pad_to_multiple_of", pad_to_multiple_of, ">= 1", lambda n: n >= 1
            )
        if seed is not None:
            seed = _checks.integer(name, "seed", seed)
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.whole_word_mask = whole_word_mask
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_tensors = return_tensors
        self.seed = seed
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
        out = torch.full((len(rows), length, *rows[0].shape[1:]), value, dtype=rows[0].dtype)
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
            elif key == "offset_mapping":
                rows = _offset_rows(examples)
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
            return _checks.seed("MLMCollator", None, None), 0
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        return _checks.seed("MLMCollator", self.seed + worker * _WORKER_STEP, None), offset

    def __call__(self, examples: Sequence[Any], return_tensors: str | None = None) -> dict[str, Any]:
        return_tensors = self.return_tensors if return_tensors is None else _return_tensors(return_tensors)
        batch = self._batch(examples)
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        offsets = batch.pop("offset_mapping", None)
        ids = batch["input_ids"]
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        if self.mlm:
            batch["labels"] = self._mask(ids, special_tokens_mask, offsets, pad_id)
        else:
            labels = ids.clone()
            if pad_id is not None:
                labels[labels == pad_id] = -100
            batch["labels"] = labels
        return {key: value.numpy() for key, value in batch.items()} if return_tensors == "np" else batch

    def _mask(
        self,
        ids: torch.Tensor,
        special_tokens_mask: torch.Tensor | None,
        offsets: torch.Tensor | None,
        pad_id: int | None,
    ) -> torch.Tensor:
        """Masks ids in place and returns the labels."""
        seed, offset = self._key()
        # A precomputed mask (padded with 1) says it all; else the special ids, padding included.
        special_ids = None
        if special_tokens_mask is None:
            special_ids = list(self.tokenizer.all_special_ids) + ([pad_id] if pad_id is not None else [])
        word_ids = None
        if self.whole_word_mask:
            if offsets is None:
                raise ValueError(
                    "MLMCollator: whole_word_mask finds the words from each example's offset_mapping, which "
                    "the examples lack; tokenize with return_offsets_mapping=True"
                )
            special = (
                torch.isin(ids, torch.tensor(special_ids, dtype=ids.dtype))
                if special_tokens_mask is None
                else special_tokens_mask.bool()
            )
            word_ids = _word_ids(offsets, special)
        _, labels = mask_tokens(
            ids,
            self.tokenizer.mask_token_id,
            len(self.tokenizer),
            self.mlm_probability,
            self.mask_replace_prob,
            self.random_replace_prob,
            special_token_ids=special_ids,
            special_tokens_mask=special_tokens_mask,
            seed=seed,
            inplace=True,
            word_ids=word_ids,
            check_ids=False,  # ids outside the vocabulary pass through, as in transformers
            offset=offset,
        )
        return labels
