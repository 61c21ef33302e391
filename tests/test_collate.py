"""ssl_fast.MLMCollator: padding, masking, seeds, and parity with transformers' collator."""

from __future__ import annotations

import copy
import functools
import inspect
import re
import subprocess
import sys
import warnings
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from test_masking import SIGMAS, within

import ssl_fast

PAD, MASK, VOCAB = 0, 4, 1000


class WordTokenizer:
    """The attributes MLMCollator reads, and nothing else."""

    mask_token_id = MASK
    pad_token_id = PAD
    all_special_ids = [0, 1, 2, 3, 4]
    padding_side = "right"
    model_input_names = ["input_ids", "attention_mask"]

    def __len__(self) -> int:
        return VOCAB


def examples(n: int, seed: int = 0, low: int = 5, high: int = 300) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=gen).tolist()
    return [
        {"input_ids": [1] + torch.randint(5, VOCAB, (k - 2,), generator=gen).tolist() + [2]} for k in lengths
    ]


def test_pads_and_masks():
    rows = examples(256)
    batch = ssl_fast.MLMCollator(WordTokenizer(), seed=0)(rows)
    assert list(batch) == ["input_ids", "attention_mask", "labels"]
    ids, attention, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.dtype == attention.dtype == labels.dtype == torch.int64
    assert ids.shape == attention.shape == labels.shape == (256, max(len(r["input_ids"]) for r in rows))
    padding = attention == 0
    assert torch.equal(ids[padding], torch.zeros_like(ids[padding]))
    selected = labels != -100
    assert not selected[padding].any() and not selected[:, 0].any()
    within(int(selected.sum()), int((~padding).sum() - 2 * len(ids)), 0.15, "selected")
    assert (ids[selected] == MASK).float().mean().item() == pytest.approx(0.8, abs=SIGMAS * 0.01)


def test_pad_to_multiple_of_and_id_lists():
    rows = [e["input_ids"] for e in examples(3, low=5, high=20)]
    batch = ssl_fast.MLMCollator(WordTokenizer(), pad_to_multiple_of=8, seed=0)(rows)
    assert list(batch) == ["input_ids", "labels"] and batch["input_ids"].shape[1] % 8 == 0
    same = [[1, 7, 8, 2], [1, 9, 9, 2]]
    assert ssl_fast.MLMCollator(WordTokenizer(), seed=0)(same)["input_ids"].shape == (2, 4)


def test_special_tokens_mask_is_used_and_removed():
    rows = examples(64)
    for row in rows:
        row["special_tokens_mask"] = [1] + [k % 2 for k in range(len(row["input_ids"]) - 2)] + [1]
    batch = ssl_fast.MLMCollator(WordTokenizer(), mlm_probability=0.5, seed=1)(rows)
    assert "special_tokens_mask" not in batch
    for r, row in enumerate(rows):
        n = len(row["input_ids"])
        flags = torch.tensor(row["special_tokens_mask"], dtype=torch.bool)
        assert not (batch["labels"][r, :n][flags] != -100).any()
        assert not (batch["labels"][r, n:] != -100).any()  # padding


def test_causal_lm_labels():
    rows = examples(4)
    batch = ssl_fast.MLMCollator(WordTokenizer(), mlm=False)(rows)
    ids = batch["input_ids"]
    assert torch.equal(batch["labels"], torch.where(ids == PAD, -100, ids))
    assert not (ids == MASK).any()


def test_seeded_batches_are_reproducible_and_distinct():
    rows = examples(8)
    first, second = (
        ssl_fast.MLMCollator(WordTokenizer(), seed=3),
        ssl_fast.MLMCollator(WordTokenizer(), seed=3),
    )
    a, b = [first(rows)["labels"] for _ in range(2)], [second(rows)["labels"] for _ in range(2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])


def test_dataloader_workers_get_distinct_seeds():
    rows = examples(1, low=200, high=201) * 8

    def run() -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            rows,
            batch_size=4,
            num_workers=2,
            collate_fn=ssl_fast.MLMCollator(WordTokenizer(), seed=5),
            multiprocessing_context="fork",
        )
        return [batch["labels"] for batch in loader]

    batches = run()
    assert len(batches) == 2 and not torch.equal(batches[0], batches[1])  # same rows, workers 0 and 1
    assert all(torch.equal(a, b) for a, b in zip(batches, run(), strict=True))


def test_does_not_import_transformers():
    code = (
        "import sys, ssl_fast\n"
        "class T:\n"
        "    mask_token_id, pad_token_id, all_special_ids = 4, 0, [0, 4]\n"
        "    def __len__(self): return 10\n"
        "ssl_fast.MLMCollator(T(), seed=0)([{'input_ids': [5, 6, 7]}, {'input_ids': [5]}])\n"
        "assert 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors():
    class NoMask(WordTokenizer):
        mask_token_id = None

    class NoPad(WordTokenizer):
        pad_token_id = None

    with pytest.raises(ValueError, match="has no mask token"):
        ssl_fast.MLMCollator(NoMask())
    with pytest.raises(ValueError, match="^MLMCollator: return_tensors must be 'pt' or 'np', got 'tf'$"):
        ssl_fast.MLMCollator(WordTokenizer(), return_tensors="tf")
    with pytest.raises(ValueError, match="^MLMCollator: return_tensors must be 'pt' or 'np', got 'jax'$"):
        ssl_fast.MLMCollator(WordTokenizer())([[5, 6]], return_tensors="jax")
    with pytest.raises(ValueError, match=r"mlm_probability must be in \[0, 1\], got 2"):
        ssl_fast.MLMCollator(WordTokenizer(), mlm_probability=2)
    with pytest.raises(ValueError, match=r"at most 1, got 0.9 \+ 0.2"):
        ssl_fast.MLMCollator(WordTokenizer(), mask_replace_prob=0.9, random_replace_prob=0.2)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1, got 0"):
        ssl_fast.MLMCollator(WordTokenizer(), pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="need padding, but the tokenizer .*NoPad.* has no pad token"):
        ssl_fast.MLMCollator(NoPad())([[5, 6], [5]])
    with pytest.raises(ValueError, match="empty batch"):
        ssl_fast.MLMCollator(WordTokenizer())([])
    with pytest.raises(ValueError, match="must have 'input_ids'"):
        ssl_fast.MLMCollator(WordTokenizer())([{"ids": [5]}])


# -- the containers an example may come in ---------------------------------------------------------

ROWS = [[], [1, 7, 8, 2], [1, 9, 2]]  # small ids, so that every integer dtype holds them
PADDED = torch.tensor([[PAD] * 4, [1, 7, 8, 2], [1, 9, 2, PAD]])
FORMS = {
    "list": list,
    "tuple": tuple,
    **{
        f"numpy.{t.__name__}": functools.partial(np.array, dtype=t)
        for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    },
    **{
        str(d): functools.partial(torch.tensor, dtype=d)
        for d in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16)
    },
}


@pytest.mark.parametrize("as_dict", [False, True], ids=["ids", "dict"])
@pytest.mark.parametrize("empty", ["first", "last"])
@pytest.mark.parametrize("form", FORMS)
def test_any_integer_container_gives_int64(form, empty, as_dict):
    order = [0, 1, 2] if empty == "first" else [1, 2, 0]
    rows = [FORMS[form](ROWS[i]) for i in order]
    if as_dict:
        rows = [{"input_ids": r} for r in rows]
    causal = ssl_fast.MLMCollator(WordTokenizer(), mlm=False)(rows)
    assert causal["input_ids"].dtype == causal["labels"].dtype == torch.int64
    assert torch.equal(causal["input_ids"], PADDED[order])
    if as_dict:
        assert causal["attention_mask"].dtype == torch.int64
        assert torch.equal(causal["attention_mask"], (PADDED[order] != PAD).long())
    # Masking sees the same int64 batch as from plain lists of ints, whatever the container.
    plain = [{"input_ids": ROWS[i]} if as_dict else ROWS[i] for i in order]
    expected = ssl_fast.MLMCollator(WordTokenizer(), seed=0)(plain)
    batch = ssl_fast.MLMCollator(WordTokenizer(), seed=0)(rows)
    assert batch.keys() == expected.keys()
    for key in batch:
        assert batch[key].dtype == torch.int64 and torch.equal(batch[key], expected[key]), key


def test_other_keys_in_any_container():
    rows = [
        {
            "input_ids": [],
            "attention_mask": np.array([], np.int32),
            "special_tokens_mask": torch.tensor([], dtype=torch.bool),
            "token_type_ids": (),
            "label": np.int32(3),
            "weight": 0.5,
        },
        {
            "input_ids": np.array([1, 7, 2], np.int32),
            "attention_mask": torch.ones(3, dtype=torch.bool),
            "special_tokens_mask": np.array([1, 0, 1], np.int8),
            "token_type_ids": [0, 0, 1],
            "label": 1,
            "weight": np.float64(2),
        },
    ]
    batch = ssl_fast.MLMCollator(WordTokenizer(), seed=0)(rows)
    assert list(batch) == ["input_ids", "attention_mask", "token_type_ids", "label", "weight", "labels"]
    for key in ("input_ids", "attention_mask", "token_type_ids", "label", "labels"):
        assert batch[key].dtype == torch.int64, key
    assert torch.equal(batch["attention_mask"], torch.tensor([[0, 0, 0], [1, 1, 1]]))
    assert torch.equal(batch["token_type_ids"], torch.tensor([[0, 0, 0], [0, 0, 1]]))
    assert torch.equal(batch["label"], torch.tensor([3, 1]))
    # Floats stay floating-point, as transformers leaves them (a per-example weight, say).
    assert torch.equal(batch["weight"], torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert (batch["labels"][0] == -100).all() and batch["labels"][1, 0] == batch["labels"][1, 2] == -100


def test_example_errors():
    collate = ssl_fast.MLMCollator(WordTokenizer())
    ids = "MLMCollator: example {}'s input_ids must be "
    cases = [
        ([[5, 6], [5.0, 6.5]], TypeError, ids.format(1) + "integer token ids, got dtype torch.float32"),
        ([{"input_ids": [True]}], TypeError, ids.format(0) + "integer token ids, got dtype torch.bool"),
        ([np.array([[5, 6]])], ValueError, ids.format(0) + "a 1-D sequence of token ids, got shape (1, 2)"),
        ([[5, 6], 7], ValueError, ids.format(1) + "a 1-D sequence of token ids, got shape ()"),
        ([[5, 6], ["a", "b"]], TypeError, ids.format(1) + "numbers, got ['a', 'b']"),
        (
            [{"input_ids": [5, 6], "attention_mask": [[1], 1]}],
            TypeError,
            "MLMCollator: example 0's attention_mask must be numbers, got [[1], 1]",
        ),
    ]
    for examples, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            collate(examples)


# -- parity with transformers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer():
    pytest.importorskip("transformers", reason="transformers is not installed (optional test dependency)")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    names = {0: "[PAD]", 1: "[CLS]", 2: "[SEP]", 3: "[UNK]", 4: "[MASK]"}
    vocab = {names.get(i, f"w{i}"): i for i in range(VOCAB)}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
    )


@pytest.mark.parametrize("with_special_mask", [False, True])
def test_same_batches_as_transformers(hf_tokenizer, with_special_mask):
    from transformers import DataCollatorForLanguageModeling

    rows = examples(512)
    if with_special_mask:
        for row in rows:
            row["special_tokens_mask"] = hf_tokenizer.get_special_tokens_mask(
                row["input_ids"], already_has_special_tokens=True
            )
    theirs = DataCollatorForLanguageModeling(hf_tokenizer, pad_to_multiple_of=8, seed=0)(
        [dict(r) for r in rows]
    )
    ours = ssl_fast.MLMCollator(hf_tokenizer, pad_to_multiple_of=8, seed=0)([dict(r) for r in rows])
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape, key
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    n = int(ours["attention_mask"].sum() - 2 * len(rows))
    for batch, who in ((ours, "ssl_fast"), (theirs, "transformers")):
        selected = batch["labels"] != -100
        assert not selected[batch["attention_mask"] == 0].any(), who
        within(int(selected.sum()), n, 0.15, f"{who} selected")
        s = int(selected.sum())
        within(int((batch["input_ids"][selected] == MASK).sum()), s, 0.8 + 0.1 / VOCAB, f"{who} masked")


@pytest.mark.parametrize(
    "rows",
    [
        [[], [1, 7, 8, 2]],
        [np.array([1, 7], np.int32), np.array([1, 7, 8, 2], np.int32)],
        [(1, 7), (1, 7, 8)],
        [{"input_ids": []}, {"input_ids": [1, 7, 8, 2]}],
        [{"input_ids": np.array([1, 7], np.int32)}, {"input_ids": np.array([1, 7, 8, 2], np.int32)}],
        [
            {"input_ids": torch.tensor([1, 7], dtype=torch.int32), "token_type_ids": np.array([0, 1], "i1")},
            {"input_ids": torch.tensor([1, 7, 8], dtype=torch.int16), "token_type_ids": [0, 0, 1]},
        ],
    ],
    ids=["empty first", "numpy int32", "tuples", "dict empty first", "dict numpy int32", "dict torch ints"],
)
@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("mlm", [True, False])
def test_same_dtypes_as_transformers(hf_tokenizer, rows, mlm, return_tensors):
    from transformers import DataCollatorForLanguageModeling

    kw = {"mlm": mlm, "seed": 0, "return_tensors": return_tensors}
    theirs = DataCollatorForLanguageModeling(hf_tokenizer, **kw)(rows)
    ours = ssl_fast.MLMCollator(hf_tokenizer, **kw)(rows)
    assert list(ours) == list(theirs)
    # transformers' numpy batch of bare numpy examples keeps their dtype; ssl_fast's is int64.
    keeps_dtype = return_tensors == "np" and isinstance(rows[0], np.ndarray)
    for key in ours:
        assert type(ours[key]) is type(theirs[key]), key
        assert ours[key].dtype in (torch.int64, np.int64), key
        assert keeps_dtype or ours[key].dtype == theirs[key].dtype, key
        assert ours[key].shape == theirs[key].shape, key
        if key != "labels" and not (mlm and key == "input_ids"):  # the masks are random
            assert (ours[key] == theirs[key]).all(), key


def test_same_arguments_as_transformers():
    """The constructor's parameters, in transformers' order: positional calls carry over."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    theirs = list(inspect.signature(transformers.DataCollatorForLanguageModeling).parameters)
    assert list(inspect.signature(ssl_fast.MLMCollator).parameters) == theirs


# -- return_tensors -------------------------------------------------------------------------------


@pytest.mark.parametrize("mlm", [True, False])
def test_numpy_batches_hold_the_tensors_values(mlm):
    rows = examples(16)
    tensors = ssl_fast.MLMCollator(WordTokenizer(), mlm=mlm, seed=0)(rows)
    per_collator = ssl_fast.MLMCollator(WordTokenizer(), mlm=mlm, seed=0, return_tensors="np")(rows)
    per_call = ssl_fast.MLMCollator(WordTokenizer(), mlm=mlm, seed=0)(rows, return_tensors="np")
    for batch in (per_collator, per_call):
        assert list(batch) == list(tensors)
        for key, value in batch.items():
            assert isinstance(value, np.ndarray) and value.dtype == np.int64, key
            assert np.array_equal(value, tensors[key].numpy()), key


# -- ids outside the tokenizer's vocabulary -------------------------------------------------------


class SpecialsOnly(WordTokenizer):
    """A vocabulary of the five special tokens: every other id of the examples lies outside it."""

    def __len__(self) -> int:
        return len(self.all_special_ids)


def test_ids_outside_the_vocabulary_are_masked_like_the_others():
    """As transformers does (its own tests give a 5-token vocabulary ids up to 999): no error;
    an id outside stays unless selected, is its own label when selected, and a random
    replacement is drawn from the vocabulary."""
    rows = examples(128)
    original = ssl_fast.MLMCollator(SpecialsOnly(), mlm=False)(rows)["input_ids"]
    batch = ssl_fast.MLMCollator(SpecialsOnly(), mlm_probability=0.5, random_replace_prob=0.2, seed=0)(rows)
    ids, labels = batch["input_ids"], batch["labels"]
    selected = labels != -100
    assert torch.equal(ids[~selected], original[~selected])
    assert torch.equal(labels[selected], original[selected])
    changed = ids != original
    assert changed.any() and bool(((ids[changed] >= 0) & (ids[changed] < len(SpecialsOnly()))).all())
    outside = original >= len(SpecialsOnly())
    within(int(selected.sum()), int(outside.sum()), 0.5, "selected")
    assert not selected[~outside].any()


@pytest.fixture(scope="module")
def specials_only_tokenizer(tmp_path_factory):
    """transformers' BertTokenizer on a vocabulary of its five special tokens, from a local file."""
    pytest.importorskip("transformers", reason="transformers is not installed (optional test dependency)")
    from transformers import BertTokenizer

    vocab = tmp_path_factory.mktemp("specials") / "vocab.txt"
    vocab.write_text("[UNK]\n[CLS]\n[SEP]\n[PAD]\n[MASK]\n")
    return BertTokenizer(str(vocab))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_ids_outside_the_vocabulary_as_in_transformers(specials_only_tokenizer, return_tensors):
    """Both collators on examples whose ids lie mostly outside the vocabulary: the same
    shapes and dtypes, the same tokens left alone, and selection rates within binomial bounds."""
    from transformers import DataCollatorForLanguageModeling

    tok = specials_only_tokenizer
    rows = [{"input_ids": list(range(200))} for _ in range(64)] + [{"input_ids": list(range(150))}]
    kw = {"mlm_probability": 0.3, "seed": 0, "return_tensors": return_tensors}
    theirs = DataCollatorForLanguageModeling(tok, **kw)(rows)
    ours = ssl_fast.MLMCollator(tok, **kw)(rows)
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape, key
    original = torch.as_tensor(DataCollatorForLanguageModeling(tok, mlm=False)(rows)["input_ids"])
    outside = original >= len(tok)
    for batch, who in ((ours, "ssl_fast"), (theirs, "transformers")):
        ids, labels = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["labels"])
        selected = labels != -100
        assert not selected[~outside].any(), who
        assert torch.equal(ids[~selected], original[~selected]), who
        within(int(selected.sum()), int(outside.sum()), 0.3, f"{who} selected")
        changed = ids != original
        assert bool(((ids[changed] >= 0) & (ids[changed] < len(tok))).all()), who


# -- whole-word masking ---------------------------------------------------------------------------

SUBWORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##believ", "##able", "the", "cat", "##s",
            "sat", "on", "mat", ",", "'", "s", "-", "a", "##n", "ant"]
# Words of one to three pieces; "mat," "un-" and "cat's" are one word each, as transformers
# reads the offsets (a piece that starts where the previous one ended continues its word).
TEXT = "the cats sat on an unbelievable mat, un-believable cat's ant"
# Whole words, all replaced by the mask token (what transformers sets, without its warning).
WHOLE_WORDS = {"whole_word_mask": True, "mask_replace_prob": 1.0, "random_replace_prob": 0.0}


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """transformers' BertTokenizer (the fast one) on a small WordPiece vocabulary from a local file."""
    pytest.importorskip("transformers", reason="transformers is not installed (optional test dependency)")
    from transformers import BertTokenizer

    vocab = tmp_path_factory.mktemp("wordpiece") / "vocab.txt"
    vocab.write_text("\n".join(SUBWORDS) + "\n")
    return BertTokenizer(str(vocab))


def word_partition(labels) -> list[int]:
    """Tokens selected together in every row (independent draws of one example) belong to one
    word: each position's group is the first position with the same selections; -1 if never
    selected."""
    selected = torch.as_tensor(labels) != -100
    columns = [tuple(selected[:, j].tolist()) for j in range(selected.shape[1])]
    return [columns.index(c) if any(c) else -1 for c in columns]


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_whole_words_as_transformers_finds_them(wordpiece, return_tensors):
    """transformers 5's whole_word_mask=True, on 400 copies of one example at p = 0.5: the
    words (tokens always selected together), found from the two collators' outputs, are the
    same; every selected token is the mask token; each word is selected in about half the rows."""
    from transformers import DataCollatorForLanguageModeling

    example = wordpiece(TEXT, return_offsets_mapping=True)
    rows = [dict(example) for _ in range(400)]
    kw = WHOLE_WORDS | {"mlm_probability": 0.5}
    theirs = DataCollatorForLanguageModeling(wordpiece, seed=0, return_tensors=return_tensors, **kw)(rows)
    ours = ssl_fast.MLMCollator(wordpiece, seed=0, return_tensors=return_tensors, **kw)(rows)
    assert list(ours) == list(theirs) == ["input_ids", "token_type_ids", "attention_mask", "labels"]
    words = word_partition(ours["labels"])
    assert words == word_partition(theirs["labels"])
    tokens = wordpiece.convert_ids_to_tokens(example["input_ids"])
    assert words[0] == words[-1] == -1  # CLS, SEP
    assert [tokens[j] for j in range(len(tokens)) if words[j] == words[tokens.index("un")]] == [
        "un", "##believ", "##able",
    ]
    assert words[tokens.index(",")] == words[tokens.index("mat")]
    ids, labels = torch.as_tensor(ours["input_ids"]), torch.as_tensor(ours["labels"])
    selected = labels != -100
    assert (ids[selected] == wordpiece.mask_token_id).all()
    assert torch.equal(labels[selected], torch.tensor(example["input_ids"]).expand_as(ids)[selected])
    for j in sorted(set(words) - {-1}):
        within(int(selected[:, j].sum()), len(rows), 0.5, f"word of {tokens[j]!r}")


def test_whole_words_in_a_padded_batch(wordpiece):
    """Examples of different lengths (transformers' tokenizer.pad does not pad offset_mapping,
    ssl_fast does): padding is never selected, and offset_mapping leaves the batch."""
    texts = [TEXT, "the cat sat", "unbelievable"]
    rows = [wordpiece(t, return_offsets_mapping=True, return_special_tokens_mask=True) for t in texts] * 50
    batch = ssl_fast.MLMCollator(wordpiece, mlm_probability=0.5, seed=1, **WHOLE_WORDS)(rows)
    assert "offset_mapping" not in batch and "special_tokens_mask" not in batch
    selected = batch["labels"] != -100
    assert not selected[batch["attention_mask"] == 0].any() and selected.any()
    unbelievable = selected[2::3, 1:4]  # un ##believ ##able, one word
    assert torch.equal(unbelievable, unbelievable[:, :1].expand_as(unbelievable))


def test_whole_word_mask_replaces_by_the_mask_token_as_transformers():
    message = (
        r"^MLMCollator: with whole_word_mask every selected token becomes the mask token, as in "
        r"transformers: mask_replace_prob 0.8 is set to 1, random_replace_prob to 0$"
    )
    with pytest.warns(UserWarning, match=message):
        collator = ssl_fast.MLMCollator(WordTokenizer(), whole_word_mask=True)
    assert (collator.mask_replace_prob, collator.random_replace_prob) == (1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ssl_fast.MLMCollator(WordTokenizer(), **WHOLE_WORDS)


def test_whole_word_mask_errors():
    collator = ssl_fast.MLMCollator(WordTokenizer(), **WHOLE_WORDS)
    cases = [
        (
            lambda: ssl_fast.MLMCollator(WordTokenizer(), mlm=False, whole_word_mask=True),
            "MLMCollator: whole_word_mask masks words for mlm=True; it does not combine with mlm=False",
        ),
        (
            lambda: collator([{"input_ids": [1, 7, 2]}]),
            "MLMCollator: whole_word_mask finds the words from each example's offset_mapping, which the "
            "examples lack; tokenize with return_offsets_mapping=True",
        ),
        (
            lambda: collator([[1, 7, 2]]),
            "MLMCollator: whole_word_mask finds the words from each example's offset_mapping",
        ),
        (
            lambda: collator([{"input_ids": [1, 7, 2], "offset_mapping": [(0, 0), (0, 3)]}]),
            "MLMCollator: example 0's offset_mapping must hold a (start, end) pair for each of its 3 tokens, "
            "got shape (2, 2)",
        ),
        (
            lambda: collator([{"input_ids": [1, 7], "offset_mapping": [0, 0, 0, 3]}]),
            "MLMCollator: example 0's offset_mapping must hold a (start, end) pair for each of its 2 tokens, "
            "got shape (4,)",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
            call()


# -- the examples are never modified --------------------------------------------------------------


def _containers(rows: list[list[int]]) -> dict[str, list]:
    """The example forms a dataset may hand over, each holding rows."""
    offsets = [[(3 * k, 3 * k + 2) for k in range(len(r))] for r in rows]
    return {
        "lists": [list(r) for r in rows],
        "tuples": [tuple(r) for r in rows],
        "numpy int64": [np.array(r, dtype=np.int64) for r in rows],
        "numpy int32": [np.array(r, dtype=np.int32) for r in rows],
        "tensors": [torch.tensor(r) for r in rows],
        "dicts of lists": [
            {"input_ids": list(r), "token_type_ids": [0] * len(r), "offset_mapping": o, "label": 1}
            for r, o in zip(rows, offsets, strict=True)
        ],
        "dicts of arrays": [
            {"input_ids": np.array(r), "special_tokens_mask": np.array([1] + [0] * (len(r) - 2) + [1]),
             "offset_mapping": np.array(o).reshape(-1, 2)}
            for r, o in zip(rows, offsets, strict=True)
        ],
        "dicts of tensors": [
            {"input_ids": torch.tensor(r), "attention_mask": torch.ones(len(r), dtype=torch.int64),
             "offset_mapping": torch.tensor(o).reshape(-1, 2)}
            for r, o in zip(rows, offsets, strict=True)
        ],
    }


def _same(a, b) -> bool:
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("form", list(_containers([[1]])))
def test_examples_are_not_modified(form, return_tensors):
    """Every container, padded or not (a single example of full length becomes the batch
    without padding), with each masking mode: the examples keep their values and dtypes."""
    for rows in ([[1, 7, 8, 9, 2], [1, 9, 2]], [[1, 5, 6, 7, 8, 2]]):
        every_kind = {"mlm_probability": 1.0, "mask_replace_prob": 0.5, "random_replace_prob": 0.5}
        modes = [{"mlm": False}, {}, every_kind]
        if "dicts" in form:
            modes.append(WHOLE_WORDS | {"mlm_probability": 1.0})
        for mode in modes:
            examples_ = _containers(rows)[form]
            before = copy.deepcopy(examples_)
            collator = ssl_fast.MLMCollator(WordTokenizer(), return_tensors=return_tensors, seed=0, **mode)
            batch = collator(examples_)
            assert all(_same(a, b) for a, b in zip(before, examples_, strict=True)), (mode, examples_)
            if mode.get("mlm_probability") == 1.0:  # the batch was masked, the examples were not
                assert (batch["labels"] != -100).any()
