"""ssl_fast.mask_tokens and random_masking: bits, statistics, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import requires_cuda

import ssl_fast
from ssl_fast import reference

ops = torch.ops.ssl_fast
VOCAB = 1000
MASK_ID = 4
SPECIALS = [0, 1, 2, 3, 4]  # pad, cls, sep, unk, mask
SIGMAS = 5  # every statistical bound: mean +- 5 standard deviations (seeded, so deterministic)


def ids_batch(rows: int, length: int, *, seed: int = 0, dtype=torch.int64, pad_from: int | None = None):
    """Random ids of non-special tokens, CLS first and SEP last in each row, padding (0)
    from column pad_from on."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIALS), VOCAB, (rows, length), generator=gen)
    ids[:, 0], ids[:, -1] = 1, 2
    if pad_from is not None:
        ids[:, pad_from:] = 0
    return ids.to(dtype)


def within(count: int, n: int, p: float, what: str) -> None:
    """count ~ Binomial(n, p): within SIGMAS standard deviations of its mean."""
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(count - mean) <= SIGMAS * sd + 1, (
        f"{what}: {count} of {n}, expected {mean:.1f} +- {SIGMAS * sd:.1f}"
    )


def mask(ids, **kw):
    kw.setdefault("special_token_ids", SPECIALS)
    kw.setdefault("seed", 1234)
    return ssl_fast.mask_tokens(ids, MASK_ID, VOCAB, **kw)


def mask_reference(monkeypatch, ids, **kw):
    with monkeypatch.context() as m:
        m.setenv("SSL_FAST_BACKEND", "torch")
        return mask(ids, **kw)


# -- the generator --------------------------------------------------------------------------------


def test_philox_known_answers():
    """Random123's known-answer vectors of Philox-4x32-10."""
    u32 = 0xFFFFFFFF
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((u32, u32, u32, u32), (u32, u32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for counter, key, expected in cases:
        assert [int(w) for w in reference.philox(counter, key)] == list(expected)


# -- kernel against the reference, bit for bit ----------------------------------------------------

CONFIGS = {
    "plain": {},
    "exact": {"exact_count": True, "mlm_probability": 0.3},
    "exclude": {"exclude_special_from_random": True, "mask_replace_prob": 0.2, "random_replace_prob": 0.7},
    "mask-only": {"special_token_ids": None, "special_tokens_mask": "pad"},
    "mask-and-ids": {"special_tokens_mask": "pad"},
    "words": {"word_ids": True},
    "all": {"mlm_probability": 1.0, "mask_replace_prob": 0.0, "random_replace_prob": 1.0},
    "none": {"mlm_probability": 0.0},
}
SHAPES = [(1, 1), (3, 7), (17, 513), (2, 3, 129)]


def resolve(config: dict, ids: torch.Tensor) -> dict:
    kw = dict(config)
    if kw.get("special_tokens_mask") == "pad":
        kw["special_tokens_mask"] = ids < len(SPECIALS)
    if kw.get("word_ids"):
        kw["word_ids"] = torch.arange(ids.numel()).view(ids.shape) // 3 % ids.shape[-1]
        kw["word_ids"][..., 0] = -1
    return kw


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_kernel_matches_reference(monkeypatch, config, shape, dtype):
    ids = ids_batch(math.prod(shape[:-1]), shape[-1], pad_from=shape[-1] - 2 if shape[-1] > 4 else None)
    ids = ids.view(shape).to(dtype)
    kw = resolve(config, ids)
    out, labels = mask(ids, **kw)
    ref_out, ref_labels = mask_reference(monkeypatch, ids, **kw)
    assert out.dtype == dtype and labels.dtype == torch.int64 and out.shape == labels.shape == ids.shape
    assert torch.equal(out, ref_out) and torch.equal(labels, ref_labels)


# Token counts around the SIMD widths of the generator (4 or 8 counters of 4 tokens a
# register, 2 to 4 registers at once) and its chunks (256 tokens); rows of odd lengths start
# at offsets that are not multiples of 4, where exact_count computes a row's own words.
TAIL_SHAPES = [(1, n) for n in (1, 3, 5, 15, 17, 31, 33, 63, 65, 127, 129, 255, 257, 4099)]
TAIL_SHAPES += [(7, 37), (5, 131), (3, 1029)]


@pytest.mark.parametrize("exact", [False, True], ids=["bernoulli", "exact"])
@pytest.mark.parametrize("shape", TAIL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_vector_tails_match_reference(monkeypatch, shape, exact):
    ids = ids_batch(*shape)
    kw = {"mlm_probability": 0.5, "mask_replace_prob": 0.4, "random_replace_prob": 0.4, "exact_count": exact}
    out, labels = mask(ids, **kw)
    ref_out, ref_labels = mask_reference(monkeypatch, ids, **kw)
    assert torch.equal(out, ref_out) and torch.equal(labels, ref_labels)
    x = torch.arange(math.prod(shape), dtype=torch.float32).view(*shape, 1)
    got = ssl_fast.random_masking(x, 0.5, seed=3)
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    assert all(torch.equal(a, b) for a, b in zip(got, ssl_fast.random_masking(x, 0.5, seed=3), strict=True))


def test_non_contiguous_and_inplace():
    ids = ids_batch(64, 300)
    view = ids.t()  # rows of length 64, strided
    out, labels = mask(view)
    assert torch.equal(out, mask(view.contiguous())[0])
    for target in (view.clone(), view.contiguous()):
        masked, inplace_labels = mask(target, inplace=True)
        assert masked is target and torch.equal(target, out) and torch.equal(inplace_labels, labels)


@pytest.mark.parametrize("exact", [False, True])
def test_same_bits_for_any_thread_count(exact):
    ids = ids_batch(64, 1000, pad_from=900)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 8):
            torch.set_num_threads(threads)
            results.append(mask(ids, exact_count=exact))
    finally:
        torch.set_num_threads(before)
    for out, labels in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(labels, results[0][1])


def test_seeds():
    ids = ids_batch(16, 512)
    assert torch.equal(mask(ids, seed=7)[0], mask(ids, seed=7)[0])
    assert not torch.equal(mask(ids, seed=7)[0], mask(ids, seed=8)[0])
    assert torch.equal(mask(ids, seed=-1)[0], mask(ids, seed=2**64 - 1)[0])  # seeds are taken mod 2^64
    torch.manual_seed(3)
    first = mask(ids, seed=None)
    second = mask(ids, seed=None)
    torch.manual_seed(3)
    assert torch.equal(mask(ids, seed=None)[0], first[0]) and not torch.equal(first[0], second[0])
    gen = torch.Generator().manual_seed(5)
    a = mask(ids, seed=None, generator=gen)[0]
    assert torch.equal(mask(ids, seed=None, generator=gen.manual_seed(5))[0], a)


def test_offsets_draw_distinct_bits_from_one_seed():
    ids = ids_batch(16, 512)
    assert torch.equal(mask(ids, seed=7, offset=0)[0], mask(ids, seed=7)[0])
    assert torch.equal(mask(ids, seed=7, offset=3)[0], mask(ids, seed=7, offset=3)[0])
    assert not torch.equal(mask(ids, seed=7, offset=1)[0], mask(ids, seed=7)[0])
    for bad in (-1, 1 << 32):
        with pytest.raises(ValueError, match=r"mask_tokens: offset must be in \[0, 2\^32\)"):
            mask(ids, seed=7, offset=bad)


# -- statistics -----------------------------------------------------------------------------------


def test_selection_and_replacement_rates():
    p, p_mask, p_random = 0.15, 0.8, 0.1
    ids = ids_batch(256, 512, pad_from=400)
    out, labels = mask(ids, mlm_probability=p, mask_replace_prob=p_mask, random_replace_prob=p_random)
    special = ids < len(SPECIALS)
    selected = labels != -100
    assert not selected[special].any(), "a special or padding token was selected"
    assert torch.equal(out[special], ids[special])
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(out[~selected], ids[~selected])
    n, s = int((~special).sum()), int(selected.sum())
    within(s, n, p, "selected")
    # A random id can also be the mask id or the token itself (1/VOCAB each).
    within(int((out[selected] == MASK_ID).sum()), s, p_mask + p_random / VOCAB, "masked")
    changed = (out[selected] != MASK_ID) & (out[selected] != ids[selected])
    within(int(changed.sum()), s, p_random * (1 - 2 / VOCAB), "random")


def chi_square_bound(bins: int) -> float:
    """Upper bound of a chi-square statistic with bins - 1 degrees of freedom (normal approx.)."""
    dof = bins - 1
    return dof + SIGMAS * math.sqrt(2 * dof)


@pytest.mark.parametrize("exclude", [False, True])
def test_random_ids_are_uniform(exclude):
    vocab = 50
    specials = [3, 17, 49]
    ids = torch.full((400, 1000), 10)
    out, _ = ssl_fast.mask_tokens(
        ids, 0, vocab, 1.0, 0.0, 1.0, special_token_ids=specials, seed=9, exclude_special_from_random=exclude
    )
    counts = torch.bincount(out.flatten(), minlength=vocab).double()
    allowed = torch.ones(vocab, dtype=torch.bool)
    if exclude:
        allowed[specials] = False
        assert counts[~allowed].sum() == 0
    counts = counts[allowed]
    expected = ids.numel() / counts.numel()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 <= chi_square_bound(counts.numel()), f"chi-square {chi2:.1f}"


def test_exact_count_is_exact():
    p = 0.15
    ids = ids_batch(64, 777)
    lengths = torch.randint(10, 777, (64,), generator=torch.Generator().manual_seed(1))
    for r, n in enumerate(lengths.tolist()):
        ids[r, n:] = 0
    _, labels = mask(ids, mlm_probability=p, exact_count=True)
    non_special = (ids >= len(SPECIALS)).sum(1)
    expected = torch.round(non_special.double() * p).long()
    assert torch.equal((labels != -100).sum(1), expected)
    assert not (labels[ids < len(SPECIALS)] != -100).any()


def test_whole_words_are_whole():
    rows, length = 64, 512
    ids = ids_batch(rows, length)
    gen = torch.Generator().manual_seed(2)
    # Words of 1 to 4 tokens; CLS and SEP have word id -1.
    starts = torch.rand(rows, length, generator=gen) < 0.4
    starts[:, 1] = True
    word_ids = starts.cumsum(1) - 1
    word_ids[:, 0] = word_ids[:, -1] = -1
    _, labels = mask(ids, word_ids=word_ids, special_token_ids=None)
    selected = labels != -100
    assert not selected[word_ids < 0].any()
    n_words, n_selected = 0, 0
    for r in range(rows):
        w = word_ids[r][word_ids[r] >= 0]
        per_word = torch.zeros(int(w.max()) + 1, dtype=torch.long).index_add_(
            0, w, selected[r][word_ids[r] >= 0].long()
        )
        sizes = torch.bincount(w)
        assert bool(((per_word == 0) | (per_word == sizes)).all()), f"row {r}: a word was split"
        n_words += int((sizes > 0).sum())
        n_selected += int((per_word > 0).sum())
    within(n_selected, n_words, 0.15, "selected words")


# -- errors a user can make -----------------------------------------------------------------------

ERRORS = [
    ({"mlm_probability": 1.5}, ValueError, r"mask_tokens: mlm_probability must be in \[0, 1\], got 1.5"),
    ({"mlm_probability": float("nan")}, ValueError, r"mlm_probability must be in \[0, 1\], got nan"),
    (
        {"mask_replace_prob": -0.1},
        ValueError,
        r"mask_replace_prob must be in \[0, 1\], got -0.1",
    ),
    ({"random_replace_prob": 2}, ValueError, r"random_replace_prob must be in \[0, 1\], got 2"),
    ({"mask_replace_prob": 0.8, "random_replace_prob": 0.3}, ValueError, r"at most 1, got 0.8 \+ 0.3"),
    ({"mask_token_id": VOCAB}, ValueError, r"mask_token_id 1000 is outside the vocabulary \[0, 1000\)"),
    ({"mask_token_id": -1}, ValueError, "mask_token_id -1 is outside the vocabulary"),
    ({"vocab_size": 0}, ValueError, r"vocab_size must be in \[1, 2\^31\), got 0"),
    ({"input_ids": torch.ones(2, 3)}, TypeError, "input_ids must be an int64 or int32 tensor.*float32"),
    ({"input_ids": torch.tensor([[5, 1000]])}, ValueError, r"ids outside the vocabulary \[0, 1000\)"),
    ({"input_ids": torch.tensor([[5, -3]])}, ValueError, "ids outside the vocabulary"),
    (
        {"input_ids": torch.zeros(0, 8, dtype=torch.long)},
        ValueError,
        r"empty batch: input_ids has shape \(0, 8\)",
    ),
    (
        {"special_tokens_mask": torch.zeros(2, 5, dtype=torch.bool)},
        ValueError,
        r"special_tokens_mask of shape \(2, 5\) does not match input_ids of shape \(2, 6\)",
    ),
    ({"word_ids": torch.zeros(6, dtype=torch.long)}, ValueError, "word_ids of shape"),
    (
        {"word_ids": torch.zeros(2, 6, dtype=torch.long), "exact_count": True},
        ValueError,
        "exact_count counts tokens and does not combine with word_ids",
    ),
    (
        {"exclude_special_from_random": True, "special_token_ids": None},
        ValueError,
        "exclude_special_from_random needs special_token_ids",
    ),
    ({"seed": 1, "generator": torch.Generator()}, ValueError, "give seed or generator, not both"),
    ({"seed": 1.5}, TypeError, r"seed must be an int, got 1.5 \(float\)"),
]


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize(("kwargs", "error", "message"), ERRORS, ids=[m[:40] for _, _, m in ERRORS])
def test_errors(monkeypatch, backend, kwargs, error, message):
    monkeypatch.setenv("SSL_FAST_BACKEND", backend)
    kw = {
        "input_ids": ids_batch(2, 6),
        "mask_token_id": MASK_ID,
        "vocab_size": VOCAB,
        "special_token_ids": SPECIALS,
        "seed": 0,
    } | kwargs
    with pytest.raises(error, match=message):
        ssl_fast.mask_tokens(**kw)


OOV_CONFIGS = {"bernoulli": {}, "exact": {"exact_count": True}, "words": {"word_ids": True}}


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("config", OOV_CONFIGS.values(), ids=OOV_CONFIGS.keys())
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_inplace_out_of_vocabulary_leaves_ids_untouched(monkeypatch, backend, config, dtype):
    """The id outside the vocabulary is the last of 32768, after every block and row that
    would be masked: the error comes before any write."""
    monkeypatch.setenv("SSL_FAST_BACKEND", backend)
    ids = ids_batch(64, 512, dtype=dtype)
    ids[-1, -1] = VOCAB + 7
    before = ids.clone()
    message = (
        rf"^mask_tokens: input_ids holds ids outside the vocabulary \[0, {VOCAB}\), e\.g\. {VOCAB + 7} "
        r"\(check_ids=False lets them pass through\)$"
    )
    with pytest.raises(ValueError, match=message):
        mask(ids, inplace=True, mlm_probability=0.5, **resolve(config, ids))
    assert torch.equal(ids, before)


# Ids a tokenizer's vocabulary does not hold (transformers' collator tests feed a 5-token
# vocabulary ids up to 999): never -100, which as a label would read "not selected".
OUTSIDE = [VOCAB, VOCAB + 7, 2**31 - 1, -1, -5]


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("config", ["plain", "exact", "exclude", "words"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_ids_outside_the_vocabulary_pass_through(monkeypatch, dtype, config, backend):
    """With check_ids=False an id outside [0, vocab_size) is a token like any other, as in
    transformers' collator: kept unless selected, its own label when selected, and never
    drawn as a random id. Its value changes nothing else: the selection is that of the
    same batch with an ordinary id in its place. The kernel and the reference agree."""
    monkeypatch.setenv("SSL_FAST_BACKEND", backend)
    gen = torch.Generator().manual_seed(4)
    base = ids_batch(17, 513, pad_from=510, dtype=dtype)
    outside = torch.rand(base.shape, generator=gen) < 0.3
    outside[:, 0] = outside[:, -3:] = False  # CLS and padding stay
    values = torch.tensor(OUTSIDE, dtype=dtype)[torch.randint(len(OUTSIDE), base.shape, generator=gen)]
    ids = torch.where(outside, values, base)
    kw = resolve(CONFIGS[config], ids) | {"check_ids": False}
    out, labels = mask(ids, **kw)
    selected = labels != -100
    assert torch.equal(out[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected].long())
    assert (selected & outside).any() and (~selected & outside).any()
    drawn = selected & (out != ids) & (out != MASK_ID)
    assert drawn.any() and ((out[drawn] >= 0) & (out[drawn] < VOCAB)).all()
    assert torch.equal(selected, mask(torch.where(outside, 500, base), **kw)[1] != -100)
    ref_out, ref_labels = mask_reference(monkeypatch, ids, **kw)
    assert torch.equal(out, ref_out) and torch.equal(labels, ref_labels)
    target = ids.clone()
    assert torch.equal(mask(target, inplace=True, **kw)[1], labels) and torch.equal(target, out)


def test_compiled_calls_let_ids_outside_the_vocabulary_pass():
    """A graph cannot raise on the ids' values: compiled, check_ids is not applied."""
    ids = ids_batch(8, 64)
    ids[:, 5] = VOCAB + 3

    def step(ids):
        return ssl_fast.mask_tokens(ids, MASK_ID, VOCAB, special_token_ids=SPECIALS, seed=3)

    got = torch.compile(step, fullgraph=True, backend="aot_eager")(ids)
    expected = ssl_fast.mask_tokens(ids, MASK_ID, VOCAB, special_token_ids=SPECIALS, seed=3, check_ids=False)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# -- torch.library and torch.compile --------------------------------------------------------------


def op_args(ids: torch.Tensor) -> tuple:
    return (
        None,
        torch.tensor(SPECIALS),
        None,
        MASK_ID,
        VOCAB,
        1 << 30,
        3 << 30,
        7 << 29,
        0.25,
        False,
        False,
        True,
        11,
        0,
    )


def test_opcheck():
    ids = ids_batch(4, 33)
    torch.library.opcheck(ops.mask_tokens, (ids, *op_args(ids)))
    torch.library.opcheck(ops.mask_tokens_, (ids.clone(), *op_args(ids)))
    x = torch.randn(3, 10, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops.random_masking, (x, 4, 5, 0))


def test_compile_fullgraph():
    ids = ids_batch(8, 64)
    x = torch.randn(2, 16, 8)

    def step(ids, x):
        masked, labels = ssl_fast.mask_tokens(ids, MASK_ID, VOCAB, special_token_ids=SPECIALS, seed=3)
        kept, patch_mask, restore = ssl_fast.random_masking(x, 0.75, seed=3)
        return masked, labels, kept, patch_mask, restore

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(ids, x), step(ids, x), strict=True):
        assert torch.equal(got, want)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_compile_non_contiguous_ids():
    """Inductor checks op outputs against the fake kernel's strides: those of transposed ids
    must be declared contiguous, as the kernels return them."""
    ids_t = ids_batch(64, 8)

    def step(ids_t):
        return ssl_fast.mask_tokens(ids_t.T, MASK_ID, VOCAB, special_token_ids=SPECIALS, seed=3)

    for got, want in zip(torch.compile(step, fullgraph=True)(ids_t), step(ids_t), strict=True):
        assert torch.equal(got, want)


# -- random_masking -------------------------------------------------------------------------------


def mae_random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
    """MAE's definition (models_mae.py), written from its description, with given noise."""
    n, length, dim = x.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, dim))
    mask = torch.ones(n, length)
    mask[:, :len_keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


@pytest.mark.parametrize("shape", [(4, 196, 24), (3, 1024, 8), (2, 1, 3), (5, 37, 1)], ids=str)
@pytest.mark.parametrize("ratio", [0.75, 0.0, 0.5, 1.0])
def test_random_masking_is_maes(monkeypatch, shape, ratio):
    x = torch.randn(shape)
    kept, mask_, restore = ssl_fast.random_masking(x, ratio, seed=42)
    n, length, _ = shape
    index = torch.arange(n * length)
    noise = (
        reference.selection_words(index, 42, 0).view(n, length).double()
    )  # ties: Philox words are distinct here
    for got, want in zip((kept, mask_, restore), mae_random_masking(x, ratio, noise), strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    for got, want in zip((kept, mask_, restore), ssl_fast.random_masking(x, ratio, seed=42), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64, torch.int32])
def test_random_masking_dtypes_and_threads(dtype):
    x = torch.randn(64, 197, 7).to(dtype)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            results.append(ssl_fast.random_masking(x, 0.6, seed=1))
    finally:
        torch.set_num_threads(before)
    kept, mask_, restore = results[0]
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[1], strict=True))
    len_keep = int(197 * 0.4)
    assert kept.dtype == dtype and kept.shape == (64, len_keep, 7)
    assert torch.equal(mask_.sum(1), torch.full((64,), 197.0 - len_keep))
    # Un-shuffling the kept patches (zeros elsewhere) restores x where mask is 0.
    padded = torch.cat([kept, kept.new_zeros(64, 197 - len_keep, 7)], 1)
    restored = padded.gather(1, restore.unsqueeze(-1).expand(-1, -1, 7))
    assert torch.equal(restored, x * (1 - mask_).unsqueeze(-1).to(dtype))


def test_random_masking_noise_is_uniform():
    """Each position is removed with probability mask_ratio."""
    n, length = 4000, 10
    _, mask_, _ = ssl_fast.random_masking(torch.zeros(n, length, 1), 0.7, seed=5)
    for position in range(length):
        within(int(mask_[:, position].sum()), n, 0.7, f"position {position} removed")


def test_random_masking_gradient():
    x = torch.randn(3, 11, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: ssl_fast.random_masking(t, 0.5, seed=2)[0], (x,))
    kept, mask_, _ = ssl_fast.random_masking(x, 0.5, seed=2)
    kept.sum().backward()
    assert torch.equal(x.grad, (1 - mask_).unsqueeze(-1).expand_as(x).double())


def test_random_masking_errors():
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \[N, L, D\]"):
        ssl_fast.random_masking(torch.zeros(3, 4), 0.5, seed=0)
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\], got 1.5"):
        ssl_fast.random_masking(torch.zeros(3, 4, 2), 1.5, seed=0)


# -- CUDA: the same bits as the CPU ---------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", SHAPES + [(64, 4096)], ids=lambda s: "x".join(map(str, s)))
def test_cuda_mask_tokens_bitwise(config, shape):
    ids = ids_batch(math.prod(shape[:-1]), shape[-1]).view(shape)
    kw = resolve(config, ids)
    cpu = mask(ids, **kw)
    kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    cuda = mask(ids.cuda(), **kw)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, cuda, strict=True))
    inplace = ids.cuda()
    assert torch.equal(mask(inplace, inplace=True, **kw)[1].cpu(), cpu[1]) and torch.equal(
        inplace.cpu(), cpu[0]
    )


@requires_cuda
@pytest.mark.parametrize("config", ["plain", "exact", "words"])
def test_cuda_ids_outside_the_vocabulary(config):
    """Passed through with the CPU's bits (the kernel asserted on them before); checked, they
    raise the CPU's ValueError before the kernel runs."""
    ids = ids_batch(33, 517)
    ids[:, 7::5] = VOCAB + 9
    ids[::2, 4::7] = -1
    kw = resolve(CONFIGS[config], ids) | {"check_ids": False}
    cpu = mask(ids, **kw)
    kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    cuda = mask(ids.cuda(), **kw)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, cuda, strict=True))
    with pytest.raises(ValueError, match=r"input_ids holds ids outside the vocabulary \[0, 1000\)"):
        mask(ids.cuda(), **(kw | {"check_ids": True}))


@requires_cuda
@pytest.mark.parametrize("shape", [(256, 196, 768), (3, 1024, 5), (2, 1, 3)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_random_masking_bitwise(shape, dtype):
    x = torch.randn(shape).to(dtype)
    cpu = ssl_fast.random_masking(x, 0.75, seed=8)
    cuda = ssl_fast.random_masking(x.cuda(), 0.75, seed=8)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, cuda, strict=True))
