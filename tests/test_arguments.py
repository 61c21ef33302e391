"""The numeric arguments of the public API: any real number (numpy scalars included) is
accepted and gives the result of the equal Python number; bools are refused with a message
naming the function, the argument and the value."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

import ssl_fast

VOCAB, MASK, PAD = 1000, 4, 0
SPECIALS = [0, 1, 2, 3, 4]


class Tokenizer:
    mask_token_id, pad_token_id, all_special_ids = MASK, PAD, SPECIALS

    def __len__(self) -> int:
        return VOCAB


def _data() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(SPECIALS), VOCAB, (4, 33), generator=gen)
    return {
        "z": torch.randn(2, 6, 5, generator=gen, dtype=torch.float64),
        "x": torch.randn(3, 10, 4, generator=gen, dtype=torch.float64),
        "ids": ids,
        "rows": [ids[0].tolist(), ids[1, :20].tolist()],
    }


D = _data()


def mask_tokens(**kw):
    return ssl_fast.mask_tokens(D["ids"], **({"mask_token_id": MASK, "vocab_size": VOCAB, "seed": 0} | kw))


def collate(**kw):
    return ssl_fast.MLMCollator(Tokenizer(), **({"seed": 0} | kw))(D["rows"])


def nt_xent_bank(temperature):
    torch.manual_seed(0)  # the bank's random initial negatives
    return ssl_fast.NTXentLoss(temperature, memory_bank_size=(8, 5))(*D["z"])


class Case(NamedTuple):
    call: Any  # the value -> the result
    func: str  # the name in the message
    arg: str
    rule: str  # as the message states it ("" for none)
    value: Any  # a valid value (a float for real arguments, an int for integer ones)
    whole: Any = None  # an integral valid value of a real argument, for numpy ints


REALS = {
    "nt_xent.temperature": Case(
        lambda v: ssl_fast.nt_xent(*D["z"], temperature=v),
        "nt_xent",
        "temperature",
        "> 0 and finite",
        0.25,
        2,
    ),
    "info_nce.temperature": Case(
        lambda v: ssl_fast.info_nce(*D["z"], temperature=v),
        "info_nce",
        "temperature",
        "> 0 and finite",
        0.25,
        2,
    ),
    "NTXentLoss.temperature": Case(
        lambda v: ssl_fast.NTXentLoss(temperature=v)(*D["z"]),
        "NTXentLoss",
        "temperature",
        "> 0 and finite",
        0.25,
        2,
    ),
    "NTXentLoss.temperature (bank)": Case(
        nt_xent_bank, "NTXentLoss", "temperature", "> 0 and finite", 0.25, 2
    ),
    "InfoNCELoss.temperature": Case(
        lambda v: ssl_fast.InfoNCELoss(v, learn_temperature=True)(*D["z"]),
        "InfoNCELoss",
        "temperature",
        "> 0 and finite",
        0.25,
        2,
    ),
    "smooth_l1_loss.beta": Case(
        lambda v: ssl_fast.smooth_l1_loss(*D["z"], beta=v), "smooth_l1_loss", "beta", ">= 0", 0.5, 1
    ),
    "SmoothL1Loss.beta": Case(
        lambda v: ssl_fast.SmoothL1Loss(beta=v)(*D["z"]), "smooth_l1_loss", "beta", ">= 0", 0.5, 1
    ),
    "random_masking.mask_ratio": Case(
        lambda v: ssl_fast.random_masking(D["x"], v, seed=0),
        "random_masking",
        "mask_ratio",
        "in [0, 1]",
        0.75,
        1,
    ),
    # The three masking probabilities, the same check in mask_tokens and MLMCollator (the other
    # share set to 0, so that the two stay within 1 together).
    **{
        f"{func}.{arg}": Case(
            lambda v, call=call, arg=arg, other=other: call(**{arg: v, other: 0}),
            func,
            arg,
            "in [0, 1]",
            0.5,
            1,
        )
        for func, call in (("mask_tokens", mask_tokens), ("MLMCollator", collate))
        for arg, other in (
            ("mlm_probability", "mask_replace_prob"),
            ("mask_replace_prob", "random_replace_prob"),
            ("random_replace_prob", "mask_replace_prob"),
        )
    },
}

INTEGERS = {
    "mask_tokens.mask_token_id": Case(
        lambda v: ssl_fast.mask_tokens(D["ids"], v, VOCAB, seed=0), "mask_tokens", "mask_token_id", "", 7
    ),
    "mask_tokens.vocab_size": Case(
        lambda v: ssl_fast.mask_tokens(D["ids"], MASK, v, seed=0),
        "mask_tokens",
        "vocab_size",
        "in [1, 2^31)",
        1200,
    ),
    "mask_tokens.seed": Case(lambda v: mask_tokens(seed=v), "mask_tokens", "seed", "", 7),
    "mask_tokens.special_token_ids": Case(
        lambda v: mask_tokens(special_token_ids=[0, v]), "mask_tokens", "special_token_ids[1]", "", 4
    ),
    "random_masking.seed": Case(
        lambda v: ssl_fast.random_masking(D["x"], 0.5, seed=v), "random_masking", "seed", "", 7
    ),
    "MLMCollator.seed": Case(lambda v: collate(seed=v), "MLMCollator", "seed", "", 7),
    "MLMCollator.pad_to_multiple_of": Case(
        lambda v: collate(pad_to_multiple_of=v), "MLMCollator", "pad_to_multiple_of", ">= 1", 8
    ),
}


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        a, b = list(a.values()), list(b.values())
    for x, y in zip(
        a if isinstance(a, tuple | list) else [a], b if isinstance(b, tuple | list) else [b], strict=True
    ):
        assert x.dtype == y.dtype
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def refusal(case: Case, kind: str, value) -> str:
    rule = f" {case.rule}" if case.rule else ""
    return re.escape(f"{case.func}: {case.arg} must be {kind}{rule}, got {value!r} ({type(value).__name__})")


@pytest.mark.parametrize("np_type", [np.float32, np.float64])
@pytest.mark.parametrize("name", REALS)
def test_numpy_floats_are_accepted(name, np_type):
    case = REALS[name]
    # The valid values are exact in float32, so that the numpy scalar equals the Python float.
    assert_same(case.call(np_type(case.value)), case.call(case.value))


@pytest.mark.parametrize("name", REALS)
def test_ints_and_numpy_ints_are_accepted_as_reals(name):
    case = REALS[name]
    expected = case.call(float(case.whole))
    assert_same(case.call(case.whole), expected)
    assert_same(case.call(np.int64(case.whole)), expected)


@pytest.mark.parametrize("np_type", [np.int64, np.int32, np.uint16])
@pytest.mark.parametrize("name", INTEGERS)
def test_numpy_ints_are_accepted(name, np_type):
    case = INTEGERS[name]
    assert_same(case.call(np_type(case.value)), case.call(case.value))


@pytest.mark.parametrize("value", [True, False, np.True_], ids=repr)
@pytest.mark.parametrize("name", REALS)
def test_bools_are_refused_as_reals(name, value):
    case = REALS[name]
    with pytest.raises(TypeError, match=refusal(case, "a real number", value)):
        case.call(value)


@pytest.mark.parametrize("value", [True, False, np.True_], ids=repr)
@pytest.mark.parametrize("name", INTEGERS)
def test_bools_are_refused_as_ints(name, value):
    case = INTEGERS[name]
    with pytest.raises(TypeError, match=refusal(case, "an int", value)):
        case.call(value)


@pytest.mark.parametrize("name", INTEGERS)
def test_floats_are_refused_as_ints(name):
    case = INTEGERS[name]
    for value in (float(case.value), np.float32(case.value)):
        with pytest.raises(TypeError, match=refusal(case, "an int", value)):
            case.call(value)


@pytest.mark.parametrize("name", REALS)
def test_other_types_are_refused_as_reals(name):
    case = REALS[name]
    for value in ("0.5", None, 0.5j):
        with pytest.raises(TypeError, match=refusal(case, "a real number", value)):
            case.call(value)


def test_range_errors_state_the_rule_and_the_value():
    """A numpy value out of range is reported as out of range, not as of the wrong type."""
    cases = [
        (
            lambda: mask_tokens(mlm_probability=np.float32(1.5)),
            r"mask_tokens: mlm_probability must be in \[0, 1\], got 1.5$",
        ),
        (
            lambda: collate(mlm_probability=np.float64(-0.25)),
            r"MLMCollator: mlm_probability must be in \[0, 1\], got -0.25$",
        ),
        (
            lambda: ssl_fast.random_masking(D["x"], np.float32(2), seed=0),
            r"random_masking: mask_ratio must be in \[0, 1\], got 2.0$",
        ),
        (
            lambda: ssl_fast.nt_xent(*D["z"], temperature=np.float32(0)),
            "nt_xent: temperature must be > 0 and finite, got 0.0$",
        ),
        (
            lambda: ssl_fast.info_nce(*D["z"], temperature=float("inf")),
            "info_nce: temperature must be > 0 and finite, got inf$",
        ),
        (
            lambda: ssl_fast.InfoNCELoss(np.float64(-1)),
            "InfoNCELoss: temperature must be > 0 and finite, got -1.0$",
        ),
        (
            lambda: ssl_fast.smooth_l1_loss(*D["z"], beta=np.float32(-0.5)),
            "smooth_l1_loss: beta must be >= 0, got -0.5$",
        ),
        (
            lambda: mask_tokens(vocab_size=np.int64(0)),
            r"mask_tokens: vocab_size must be in \[1, 2\^31\), got 0$",
        ),
        (
            lambda: mask_tokens(mask_token_id=np.int32(VOCAB)),
            r"mask_token_id 1000 is outside the vocabulary \[0, 1000\)",
        ),
        (
            lambda: collate(pad_to_multiple_of=np.int64(0)),
            "MLMCollator: pad_to_multiple_of must be >= 1, got 0$",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_the_sum_of_numpy_replace_probabilities_is_checked():
    with pytest.raises(ValueError, match=r"mask_tokens: .* at most 1, got 0.75 \+ 0.5"):
        mask_tokens(mask_replace_prob=np.float32(0.75), random_replace_prob=np.float64(0.5))
    with pytest.raises(ValueError, match=r"MLMCollator: .* at most 1, got 0.75 \+ 0.5"):
        collate(mask_replace_prob=np.float32(0.75), random_replace_prob=np.float64(0.5))


def test_tensors():
    """A one-element beta is read as a number, as torch's smooth_l1_loss does; a tensor
    temperature is refused with a pointer to logit_scale, which learns it."""
    assert_same(
        ssl_fast.smooth_l1_loss(*D["z"], beta=torch.tensor(0.5)), ssl_fast.smooth_l1_loss(*D["z"], beta=0.5)
    )
    for call in (
        lambda t: ssl_fast.nt_xent(*D["z"], temperature=t),
        lambda t: ssl_fast.info_nce(*D["z"], temperature=t),
        lambda t: ssl_fast.NTXentLoss(t),
    ):
        with pytest.raises(
            TypeError,
            match=r"temperature must be a real number, got tensor\(0.5000\) \(Tensor\); "
            r"pass a learnable scale as logit_scale",
        ):
            call(torch.tensor(0.5))
    with pytest.raises(
        TypeError, match=r"mask_ratio must be a real number in \[0, 1\], got tensor\(0.5000\)"
    ):
        ssl_fast.random_masking(D["x"], torch.tensor(0.5), seed=0)


def test_numpy_special_token_ids():
    expected = mask_tokens(special_token_ids=SPECIALS)
    assert_same(mask_tokens(special_token_ids=np.array(SPECIALS, dtype=np.int32)), expected)
    assert_same(mask_tokens(special_token_ids=torch.tensor(SPECIALS)), expected)


def test_memory_bank_size():
    torch.manual_seed(0)
    expected = ssl_fast.NTXentLoss(memory_bank_size=(8, 5))(*D["z"])
    torch.manual_seed(0)
    assert_same(ssl_fast.NTXentLoss(memory_bank_size=(np.int64(8), np.int32(5)))(*D["z"]), expected)
    assert ssl_fast.NTXentLoss(memory_bank_size=np.int64(8)).bank_size == 8
    for value in (True, (8, True), 8.0, (8, 5.0), (8, -1), (1, 2, 3), "8"):
        got = re.escape(f"got {value!r} ({type(value).__name__})")
        with pytest.raises(ValueError, match=f"NTXentLoss: memory_bank_size must be 0, a size or .*{got}"):
            ssl_fast.NTXentLoss(memory_bank_size=value)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_numpy_scalars_under_torch_compile():
    """torch.compile traces numpy scalars as arrays: the checks cannot accept them in a graph,
    so the function runs eagerly (with the right result) or, under fullgraph, fails saying why."""
    z0, z1 = D["z"]
    temperature = np.float32(0.25)
    compiled = torch.compile(lambda a, b: ssl_fast.nt_xent(a, b, temperature=temperature))
    assert_same(compiled(z0, z1), ssl_fast.nt_xent(z0, z1, 0.25))
    fullgraph = torch.compile(lambda a, b: ssl_fast.nt_xent(a, b, temperature=temperature), fullgraph=True)
    with pytest.raises(Exception, match="numpy value inside torch.compile.*pass a Python number there"):
        fullgraph(z0, z1)
    with pytest.raises(TypeError, match=re.escape("got True (bool)")):
        torch.compile(lambda a, b: ssl_fast.nt_xent(a, b, temperature=True))(z0, z1)
