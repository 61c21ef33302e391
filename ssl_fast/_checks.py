"""Checks of the numeric arguments of the public API, shared by every op, loss and the collator.

Any real number is accepted (int, float, numpy scalars, fractions) and returned as a plain
Python float or int, so that what follows never sees a numpy type. bool is refused although
Python counts it as an int: True as a temperature or a probability is a mistake, not a 1.
Tensors are refused too: an argument that may be a tensor takes its own path (e.g. info_nce's
logit_scale). The messages name the function, the argument and the offending value.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch

# numpy registers its scalar types with numbers (np.floating as Real, np.integer as
# Integral) but not np.bool_, which is thus refused with bool.


def is_real(value: object) -> bool:
    """A real number that is not a bool (numpy's included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """An integer that is not a bool (numpy's included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _refusal(func: str, arg: str, kind: str, rule: str, value: object) -> TypeError:
    must = f"{func}: {arg} must be {kind}{' ' + rule if rule else ''}"
    if torch.compiler.is_compiling() and isinstance(value, np.ndarray):
        # torch.compile traces a numpy scalar as a 0-dim array, which no check can tell from
        # one; printing it would break the graph and leave this error to run eagerly.
        return TypeError(
            f"{must}, got a numpy value inside torch.compile, which traces numpy scalars as arrays: "
            "pass a Python number there"
        )
    return TypeError(f"{must}, got {value!r} ({type(value).__name__})")


def real(
    func: str, arg: str, value: object, rule: str = "", ok: Callable[[float], bool] | None = None
) -> float:
    """value as a float, if it is a real number for which ok holds.

    rule says what ok requires, as it reads after "must be" (e.g. "in [0, 1]"). A value of
    the wrong type raises TypeError, one outside the rule ValueError (NaN fails any rule
    written as comparisons).
    """
    if not is_real(value):
        raise _refusal(func, arg, "a real number", rule, value)
    number = float(value)
    if ok is not None and not ok(number):
        raise ValueError(f"{func}: {arg} must be {rule}, got {value}")
    return number


def integer(
    func: str, arg: str, value: object, rule: str = "", ok: Callable[[int], bool] | None = None
) -> int:
    """value as an int, if it is an integer for which ok holds; as real() otherwise."""
    if not is_integer(value):
        raise _refusal(func, arg, "an int", rule, value)
    number = int(value)
    if ok is not None and not ok(number):
        raise ValueError(f"{func}: {arg} must be {rule}, got {value}")
    return number


def probability(func: str, arg: str, value: object) -> float:
    """value as a float in [0, 1]."""
    return real(func, arg, value, "in [0, 1]", lambda p: 0 <= p <= 1)


def seed(func: str, value: int | None, generator: torch.Generator | None) -> int:
    """The 64-bit Philox key of a call as a signed int64: the seed given (any integer,
    taken modulo 2^64), else one drawn from `generator` or torch's global generator."""
    if value is not None and generator is not None:
        raise ValueError(f"{func}: give seed or generator, not both")
    if value is None:
        gen = generator if generator is not None else torch.default_generator
        return int(
            torch.randint(
                -(1 << 63), (1 << 63) - 1, (), dtype=torch.int64, generator=gen, device=gen.device
            ).item()
        )
    key = integer(func, "seed", value) % (1 << 64)
    return key - (1 << 64) if key >= 1 << 63 else key
