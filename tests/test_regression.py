"""ssl_fast.smooth_l1_loss / mse_loss against torch.nn.functional and ssl_fast.reference."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FLOAT_DTYPES, assert_accurate, randn, requires_cuda

import ssl_fast
from ssl_fast import reference

REDUCTIONS = ["none", "mean", "sum"]
DTYPE_IDS = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
ops = torch.ops.ssl_fast


@dataclass(frozen=True)
class Loss:
    """One loss under test: smooth-L1 with `beta`, or MSE when beta is None."""

    beta: float | None

    def __str__(self) -> str:
        return "mse" if self.beta is None else f"smooth_l1-beta{self.beta:g}"

    def ours(self, x, y, reduction="mean", mask=None):
        if self.beta is None:
            return ssl_fast.mse_loss(x, y, reduction=reduction, mask=mask)
        return ssl_fast.smooth_l1_loss(x, y, beta=self.beta, reduction=reduction, mask=mask)

    def torch(self, x, y, reduction="mean"):
        if self.beta is None:
            return F.mse_loss(x, y, reduction=reduction)
        return F.smooth_l1_loss(x, y, beta=self.beta, reduction=reduction)

    def reference(self, x, y, reduction="mean", mask=None):
        if self.beta is None:
            return reference.mse_loss(x, y, reduction, mask)
        return reference.smooth_l1_loss(x, y, self.beta, reduction, mask)

    @property
    def name(self) -> str:
        return "mse_loss" if self.beta is None else "smooth_l1_loss"

    @property
    def params(self) -> tuple[float, ...]:
        """The loss parameters of the raw ops' schemas."""
        return () if self.beta is None else (self.beta,)


LOSSES = [Loss(1.0), Loss(0.5), Loss(0.0), Loss(2.0), Loss(None)]
SMOOTH_L1, MSE = Loss(1.0), Loss(None)
loss_param = pytest.mark.parametrize("loss", LOSSES, ids=str)
reduction_param = pytest.mark.parametrize("reduction", REDUCTIONS)
dtype_param = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)


def run(fn, x, y, reduction, grad_output=None, **kw):
    """Loss and (input, target) gradients of fn on fresh leaves; grad_output None means 1."""
    x, y = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    out = fn(x, y, reduction, **kw)
    out.backward(torch.ones_like(out) if grad_output is None else grad_output)
    return out.detach(), x.grad, y.grad


def away_from_kinks(x: torch.Tensor, y: torch.Tensor, beta: float | None, gap: float = 0.05) -> torch.Tensor:
    """x moved so that no |x - y| is within `gap` of 0 or of beta, where finite differences break."""
    d = x - y
    for kink in {0.0, beta or 0.0}:
        near = (d.abs() - kink).abs() < gap
        d = torch.where(near, d + torch.where(d < 0, -3 * gap, 3 * gap), d)
    return y + d


# -- values and gradients --------------------------------------------------------------------------


def check_against_torch(loss: Loss, x, y, reduction: str, grad_output=None) -> None:
    """Loss and both gradients of ssl_fast in x's dtype meet the dtype-aware criterion against
    float64, with torch.nn.functional in x's dtype as the yardstick."""
    ours = run(loss.ours, x, y, reduction, grad_output)
    theirs = run(loss.torch, x, y, reduction, grad_output)
    g64 = None if grad_output is None else grad_output.double()
    ref = run(loss.torch, x.double(), y.double(), reduction, g64)
    for what, o, t, r in zip(("loss", "grad input", "grad target"), ours, theirs, ref, strict=True):
        assert_accurate(o, t, r, f"{loss} {reduction} {what}")


@pytest.mark.parametrize(
    "shape", [(1,), (7,), (3, 5), (), (1009,)], ids=lambda s: "x".join(map(str, s)) or "0d"
)
@reduction_param
@dtype_param
@loss_param
def test_matches_torch(loss, dtype, reduction, shape, device, gen):
    """grad_output is 1 for the reduced losses (the saved-gradient fast path), random for 'none'."""
    x, y = (
        randn(*shape, gen=gen, dtype=dtype, device=device),
        randn(*shape, gen=gen, dtype=dtype, device=device),
    )
    g = randn(*shape, gen=gen, dtype=dtype, device=device) if reduction == "none" else None
    check_against_torch(loss, x, y, reduction, g)


LARGE = (41, 401, 127)  # odd sizes over many 8192-element blocks, split across threads
LARGE_CASES = [(loss, dtype, "mean") for loss in (SMOOTH_L1, MSE) for dtype in FLOAT_DTYPES] + [
    (Loss(0.0), torch.float32, "none"),
    (Loss(0.5), torch.bfloat16, "sum"),
    (MSE, torch.float16, "none"),  # 'sum' overflows float16 here, as in torch
    (MSE, torch.float16, "sum"),
    (Loss(2.0), torch.float64, "sum"),
]


@functools.cache
def large_inputs(dtype: torch.dtype, device: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(41)
    return tuple(randn(*LARGE, gen=gen, dtype=dtype, device=device) for _ in range(3))


@pytest.mark.parametrize(
    "loss, dtype, reduction", LARGE_CASES, ids=[f"{c[0]}-{DTYPE_IDS[c[1]]}-{c[2]}" for c in LARGE_CASES]
)
def test_matches_torch_large(loss, dtype, reduction, device):
    x, y, g = large_inputs(dtype, device)
    check_against_torch(loss, x, y, reduction, g if reduction == "none" else None)


@dtype_param
@pytest.mark.parametrize("mode", ["saved", "not-one", "retained"])
def test_large_gradients(dtype, mode, device, gen):
    """Over a few blocks, the ways to a gradient agree with torch: the gradient saved by the
    forward (grad_output 1), and the one the backward op recomputes (grad_output != 1, or a
    second backward with retain_graph). For float16 these gradients of a mean are
    subnormal, where one rounding step is large (see TOL)."""
    x, y = (
        randn(20011, gen=gen, dtype=dtype, device=device),
        randn(20011, gen=gen, dtype=dtype, device=device),
    )
    g = torch.tensor(1.0 if mode == "saved" else -0.75, dtype=dtype, device=device)
    for loss in (SMOOTH_L1, MSE):
        ref = run(loss.torch, x.double(), y.double(), "mean", g.double())
        theirs = run(loss.torch, x, y, "mean", g)
        xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = loss.ours(xl, yl)
        if mode == "retained":
            torch.autograd.grad(out, (xl, yl), retain_graph=True)
        ours = (out.detach(), *torch.autograd.grad(out, (xl, yl), g))
        for what, o, t, r in zip(("loss", "grad input", "grad target"), ours, theirs, ref, strict=True):
            assert_accurate(o, t, r, f"{loss} {what}")


def test_fp16_computed_in_fp32():
    """A mean whose elementwise squares overflow float16 still comes out right."""
    x = torch.tensor([300.0, 0.0, 0.0, 0.0], dtype=torch.float16, requires_grad=True)
    y = torch.zeros(4, dtype=torch.float16)
    loss = ssl_fast.mse_loss(x, y)
    loss.backward()
    assert loss.dtype == torch.float16
    assert loss.item() == torch.tensor(22500.0).half().item()
    assert x.grad.tolist() == [150.0, 0.0, 0.0, 0.0]
    assert ssl_fast.smooth_l1_loss(x, y, beta=0.5, reduction="sum").item() == 299.75


@dtype_param
@reduction_param
def test_mixed_dtypes_promote_as_torch(dtype, reduction, gen):
    x = randn(4, 3, gen=gen, dtype=torch.float16)
    y = randn(4, 3, gen=gen, dtype=dtype)
    for loss in (SMOOTH_L1, MSE):
        ours, theirs = run(loss.ours, x, y, reduction), run(loss.torch, x, y, reduction)
        for o, t in zip(ours, theirs, strict=True):
            assert o.dtype == t.dtype
            torch.testing.assert_close(o, t)


# -- layouts, broadcasting -------------------------------------------------------------------------

VIEWS = {  # name: (input base shape, input view, target base shape, target view)
    "transposed": ((7, 5), lambda t: t.t(), (5, 7), lambda t: t),
    "stepped": ((10, 9), lambda t: t[::2, 1::3], (5, 6), lambda t: t[:, ::2]),
    "expanded": ((1, 6), lambda t: t.expand(4, 6), (4, 1), lambda t: t.expand(4, 6)),
    # Over 4 blocks of 8192, so that the strided loops run in parallel.
    "transposed_large": ((181, 191), lambda t: t.t(), (191, 181), lambda t: t),
    "both_strided_large": ((191, 181), lambda t: t.t(), (181, 382), lambda t: t[:, ::2]),
}


@pytest.mark.parametrize("view", VIEWS)
@reduction_param
@pytest.mark.parametrize("loss", [SMOOTH_L1, Loss(0.0), MSE], ids=str)
def test_non_contiguous(loss, reduction, view, device, gen):
    xs, xv, ys, yv = VIEWS[view]
    xb, yb = randn(*xs, gen=gen, device=device), randn(*ys, gen=gen, device=device)
    results = []
    for fn in (loss.ours, loss.torch):
        xl, yl = xb.clone().requires_grad_(), yb.clone().requires_grad_()
        x, y = xv(xl), yv(yl)
        assert not (x.is_contiguous() and y.is_contiguous())
        out = fn(x, y, reduction)
        out.backward(torch.ones_like(out) * 1.5)
        results.append((out, xl.grad, yl.grad))
    for o, t in zip(*results, strict=True):
        torch.testing.assert_close(o, t)


@pytest.mark.filterwarnings("ignore:Using a target size")  # torch warns about broadcasting; we need not
@pytest.mark.parametrize(
    "shapes", [((4, 1, 3), (5, 3)), ((2, 3), ()), ((), (2, 3)), ((3,), (2, 1, 3)), ((2, 1), (1, 3))], ids=str
)
@reduction_param
@loss_param
def test_broadcasting(loss, reduction, shapes, device, gen):
    x, y = randn(*shapes[0], gen=gen, device=device), randn(*shapes[1], gen=gen, device=device)
    g = randn(*torch.broadcast_shapes(*shapes), gen=gen, device=device) if reduction == "none" else None
    ours, theirs = run(loss.ours, x, y, reduction, g), run(loss.torch, x, y, reduction, g)
    assert ours[1].shape == x.shape and ours[2].shape == y.shape
    for o, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(o, t)


# -- autograd --------------------------------------------------------------------------------------


@reduction_param
@loss_param
def test_grad_output_not_one(loss, reduction, device, gen):
    x, y = randn(6, 11, gen=gen, device=device), randn(6, 11, gen=gen, device=device)
    assert_same_grads_for_grad_output_not_one((loss.ours, loss.torch), x, y, reduction)


def assert_same_grads_for_grad_output_not_one(fns, x, y, reduction, **kw):
    """Each fn's input and target gradients for an upstream gradient of 2.5 (reduced) or a
    random tensor ('none') are the same."""
    results = []
    for fn in fns:
        xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = fn(xl, yl, reduction, **kw)
        if reduction == "none":
            out.backward(randn(*x.shape, gen=torch.Generator().manual_seed(7), device=x.device))
        else:
            (2.5 * out).backward()
        results.append((xl.grad, yl.grad))
    for o, t in zip(*results, strict=True):
        torch.testing.assert_close(o, t)


@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True), (False, False)], ids=str)
@reduction_param
@loss_param
def test_requires_grad_combinations(loss, reduction, needs, device, gen):
    x, y = randn(5, 9, gen=gen, device=device), randn(5, 9, gen=gen, device=device)
    assert_same_for_requires_grad((loss.ours, loss.torch), x, y, reduction, needs)


def assert_same_for_requires_grad(fns, x, y, reduction, needs, **kw):
    """With input and target requiring grad as `needs` says, each fn gives the same loss and
    the same gradients (None where not required)."""
    results = []
    for fn in fns:
        xl, yl = x.clone().requires_grad_(needs[0]), y.clone().requires_grad_(needs[1])
        out = fn(xl, yl, reduction, **kw)
        assert out.requires_grad == any(needs)
        if any(needs):
            out.sum().backward()
        results.append((out.detach(), xl.grad, yl.grad))
    for ours, theirs in zip(*results, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs)


@reduction_param
@loss_param
def test_no_grad_mode(loss, reduction, gen):
    x, y = randn(4, 5, gen=gen).requires_grad_(), randn(4, 5, gen=gen)
    with torch.no_grad():
        out = loss.ours(x, y, reduction)
    assert not out.requires_grad and out.grad_fn is None
    torch.testing.assert_close(out, loss.torch(x.detach(), y, reduction))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@loss_param
def test_retain_graph_two_backwards(loss, reduction, device, gen):
    """The first backward hands over the gradient saved by the forward; the second recomputes it."""
    x, y = randn(20011, gen=gen, device=device), randn(20011, gen=gen, device=device)
    x.requires_grad_(), y.requires_grad_()
    out = loss.ours(x, y, reduction)
    first = torch.autograd.grad(out, (x, y), retain_graph=True)
    second = torch.autograd.grad(out, (x, y), retain_graph=True)
    scaled = torch.autograd.grad(out, (x, y), torch.tensor(-2.5, dtype=out.dtype, device=device))
    expected = torch.autograd.grad(loss.torch(x, y, reduction), (x, y))
    for f, s, c, e in zip(first, second, scaled, expected, strict=True):
        assert torch.equal(f, s)
        torch.testing.assert_close(f, e)
        torch.testing.assert_close(c, -2.5 * e)


@loss_param
def test_backward_accumulates_into_existing_grad(loss, gen):
    """loss.backward() twice (retain_graph) accumulates like torch: 2x the gradient."""
    x, y = randn(300, gen=gen).requires_grad_(), randn(300, gen=gen)
    out = loss.ours(x, y)
    out.backward(retain_graph=True)
    out.backward()
    expected = torch.autograd.grad(loss.torch(x, y), x)[0]
    torch.testing.assert_close(x.grad, 2 * expected)


@loss_param
def test_input_shared_between_losses(loss, gen):
    x, y, z = randn(50, gen=gen).requires_grad_(), randn(50, gen=gen), randn(50, gen=gen)
    (loss.ours(x, y) + loss.ours(x, z, "sum")).backward()
    expected = torch.autograd.grad(loss.torch(x, y) + loss.torch(x, z, "sum"), x)[0]
    torch.testing.assert_close(x.grad, expected)


@loss_param
def test_inplace_modification_after_forward_is_detected(loss, gen):
    """As in torch: the saved gradient of the old values must not be used silently."""
    base = randn(10, gen=gen).requires_grad_()
    x = base * 1
    out = loss.ours(x, randn(10, gen=gen))
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


MASKS = {
    "none": None,
    "bool[N,L]": torch.tensor([[True, False, True], [False, True, True]]),
    "float[N]": torch.tensor([0.5, 2.0], dtype=torch.float64),
}


@pytest.mark.parametrize(
    "check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck], ids=["grad", "gradgrad"]
)
@pytest.mark.parametrize("mask", MASKS)
@reduction_param
@loss_param
def test_gradcheck(loss, reduction, mask, check, gen):
    """First derivatives, and second ones (create_graph=True runs the PyTorch formula)."""
    x, y = randn(2, 3, 3, gen=gen), randn(2, 3, 3, gen=gen)
    x = away_from_kinks(x, y, loss.beta).requires_grad_()
    m = MASKS[mask]
    assert check(lambda a, b: loss.ours(a, b, reduction, mask=m), (x, y.requires_grad_()))


# -- torch.library ---------------------------------------------------------------------------------

OPCHECK_CASES = [  # (requires_grad, weighted, reduction code, compute_grad): every value of each
    (False, False, 0, False),
    (True, True, 1, True),
    (True, False, 2, False),
    (False, True, 2, True),
]


# opcheck runs the *_backward ops with inputs that require grad; they have no autograd (no
# double backward), which torch reports with a warning.
@pytest.mark.filterwarnings("ignore:.*an autograd kernel was not registered")
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=str)
@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_opcheck(loss, case, gen):
    requires_grad, weighted, reduction, compute_grad = case
    x = randn(3, 5, gen=gen, dtype=torch.float32).requires_grad_(requires_grad)
    y = randn(1, 5, gen=gen, dtype=torch.float32)
    w = torch.rand(3, 1, generator=gen) if weighted else None
    op, backward_op = getattr(ops, loss.name), getattr(ops, f"{loss.name}_backward")
    torch.library.opcheck(op, (x, y, *loss.params, reduction, w, compute_grad))
    g = torch.randn((3, 5) if reduction == 0 else (), generator=gen)
    torch.library.opcheck(backward_op, (g, x, y, *loss.params, reduction, w))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_torch_compile_fullgraph(gen):
    def f(x, y, m):
        return (
            ssl_fast.smooth_l1_loss(x, y, beta=0.5)
            + ssl_fast.mse_loss(x, y, reduction="sum", mask=m)
            + ssl_fast.smooth_l1_loss(x, y, beta=0.0, reduction="none", mask=m.float()).sum()
            + ssl_fast.mse_loss(x, y, mask=m)
        )

    x, y = randn(4, 6, 3, gen=gen, dtype=torch.float32), randn(4, 6, 3, gen=gen, dtype=torch.float32)
    m = torch.rand(4, 6, generator=gen) > 0.3
    compiled = torch.compile(f, fullgraph=True)
    results = [run(lambda a, b, _, fn=fn: fn(a, b, m), x, y, None) for fn in (f, compiled)]
    for eager, comp in zip(*results, strict=True):
        torch.testing.assert_close(comp, eager)


# -- semantics -------------------------------------------------------------------------------------


@reduction_param
def test_beta_zero_is_l1(reduction, gen):
    """Zero subgradient where input == target, no NaN from the division by beta."""
    x, y = randn(4, 6, gen=gen), randn(4, 6, gen=gen)
    y[::2] = x[::2]
    g = torch.ones(4, 6, dtype=torch.float64) if reduction == "none" else None
    ours = run(lambda a, b, r: ssl_fast.smooth_l1_loss(a, b, beta=0.0, reduction=r), x, y, reduction, g)
    expected = run(lambda a, b, r: F.l1_loss(a, b, reduction=r), x, y, reduction, g)
    for o, e in zip(ours, expected, strict=True):
        assert not o.isnan().any()
        torch.testing.assert_close(o, e)
    assert (ours[1][::2] == 0).all() and (ours[2][::2] == 0).all()


@pytest.mark.parametrize("beta", [-0.5, -1e-12, float("nan"), float("-inf")])
def test_invalid_beta(beta):
    with pytest.raises(ValueError, match=r"smooth_l1_loss: beta must be >= 0, got"):
        ssl_fast.smooth_l1_loss(torch.zeros(3), torch.zeros(3), beta=beta)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 5)], ids=str)
@reduction_param
@loss_param
def test_empty(loss, reduction, shape):
    x, y = torch.empty(shape), torch.empty(shape)
    ours, theirs = run(loss.ours, x, y, reduction), run(loss.torch, x, y, reduction)
    if reduction == "mean":
        assert ours[0].isnan()
    if reduction == "sum":
        assert ours[0].item() == 0
    if reduction == "none":
        assert ours[0].shape == shape
    for o, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(o, t, equal_nan=True)


NONFINITE_X = [0.0, math.nan, math.inf, -math.inf, 1.0, math.inf, 2.0, -math.inf, 0.3, 5.0]
NONFINITE_Y = [0.0, 1.0, 0.0, 0.0, math.nan, math.inf, 2.0, math.inf, -0.2, -math.inf]


@dtype_param
@reduction_param
@loss_param
def test_nan_and_inf_propagate_as_torch(loss, reduction, dtype):
    x, y = torch.tensor(NONFINITE_X, dtype=dtype), torch.tensor(NONFINITE_Y, dtype=dtype)
    g = torch.linspace(-1, 1, len(x), dtype=dtype) if reduction == "none" else None
    for o, t in zip(run(loss.ours, x, y, reduction, g), run(loss.torch, x, y, reduction, g), strict=True):
        torch.testing.assert_close(o, t, equal_nan=True)
    # One NaN or inf among finite values: only the reduced result and that element see it.
    for bad in (math.nan, math.inf):
        x, y = torch.zeros(9, dtype=dtype), torch.full((9,), 0.25, dtype=dtype)
        x[4] = bad
        g9 = None if g is None else g[:9]
        for o, t in zip(
            run(loss.ours, x, y, reduction, g9), run(loss.torch, x, y, reduction, g9), strict=True
        ):
            torch.testing.assert_close(o, t, equal_nan=True)


# -- masks -----------------------------------------------------------------------------------------

MASK_KINDS = {
    "bool[N,L]": lambda gen: torch.rand(3, 5, generator=gen) > 0.4,
    "float[N,L]": lambda gen: torch.rand(3, 5, generator=gen).double(),
    "bool[N]": lambda gen: torch.tensor([True, False, True]),
    "float[N]": lambda gen: torch.tensor([0.25, 0.0, 1.5], dtype=torch.float64),
    "bool[N,L,D]": lambda gen: torch.rand(3, 5, 4, generator=gen) > 0.5,
}


@pytest.mark.parametrize("kind", MASK_KINDS)
@reduction_param
@dtype_param
@pytest.mark.parametrize("loss", [SMOOTH_L1, Loss(0.0), MSE], ids=str)
def test_mask(loss, dtype, reduction, kind, device, gen):
    """Masked values and gradients: the MAE formula ((loss.mean(-1) * mask).sum() / mask.sum())
    of ssl_fast.reference.masked_reduce, criterion as above."""
    x, y = (
        randn(3, 5, 4, gen=gen, dtype=dtype, device=device),
        randn(3, 5, 4, gen=gen, dtype=dtype, device=device),
    )
    mask = MASK_KINDS[kind](gen).to(device)
    assert mask.any()
    g = None
    if reduction == "none":
        g = randn(*mask.shape, gen=gen, dtype=dtype, device=device)
    ours = run(loss.ours, x, y, reduction, g, mask=mask)
    theirs = run(loss.reference, x, y, reduction, g, mask=mask)
    ref = run(loss.reference, x.double(), y.double(), reduction, None if g is None else g.double(), mask=mask)
    for what, o, t, r in zip(("loss", "grad input", "grad target"), ours, theirs, ref, strict=True):
        assert_accurate(o, t, r, what)


@pytest.mark.parametrize("kind", ["bool[N,L]", "float[N,L]", "bool[N]", "float[N]"])
@reduction_param
@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_mask_formula(loss, reduction, kind, gen):
    """The masked loss written out, as MAE computes it: per-position mean over the trailing
    dims, weighted by the mask, then summed and divided by the mask's sum."""
    x, y = randn(3, 5, 4, gen=gen), randn(3, 5, 4, gen=gen)
    mask = MASK_KINDS[kind](gen)
    per_position = loss.torch(x, y, "none").flatten(mask.dim()).mean(-1)
    weighted = per_position * mask.double()
    expected = {"none": weighted, "sum": weighted.sum(), "mean": weighted.sum() / mask.double().sum()}
    torch.testing.assert_close(loss.ours(x, y, reduction, mask=mask), expected[reduction])


@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_mask_with_broadcast_operands(loss, gen):
    x, y = randn(3, 1, 4, gen=gen), randn(5, 4, gen=gen)
    mask = torch.rand(3, 5, generator=gen) > 0.3
    for reduction in REDUCTIONS:
        g = randn(3, 5, gen=gen) if reduction == "none" else None
        ours = run(loss.ours, x, y, reduction, g, mask=mask)
        expected = run(loss.reference, x, y, reduction, g, mask=mask)
        for o, e in zip(ours, expected, strict=True):
            torch.testing.assert_close(o, e)


@reduction_param
@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_all_false_mask(loss, reduction, gen):
    x, y = randn(2, 3, 4, gen=gen), randn(2, 3, 4, gen=gen)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    g = torch.ones(2, 3, dtype=torch.float64) if reduction == "none" else None
    ours = run(loss.ours, x, y, reduction, g, mask=mask)
    if reduction == "mean":
        assert ours[0].isnan()
    else:
        assert (ours[0] == 0).all()
    expected = run(loss.reference, x, y, reduction, g, mask=mask)
    for o, e in zip(ours, expected, strict=True):
        torch.testing.assert_close(o, e, equal_nan=True)


@reduction_param
@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_mask_gets_no_gradient(loss, reduction, gen):
    x, y = randn(2, 3, 4, gen=gen), randn(2, 3, 4, gen=gen)
    mask = torch.rand(2, 3, generator=gen, dtype=torch.float64).requires_grad_()
    assert not loss.ours(x, y, reduction, mask=mask).requires_grad
    x.requires_grad_()
    loss.ours(x, y, reduction, mask=mask).sum().backward()
    assert mask.grad is None and x.grad is not None


# -- determinism -----------------------------------------------------------------------------------


@reduction_param
@pytest.mark.parametrize("loss", [SMOOTH_L1, Loss(0.0), MSE], ids=str)
def test_repeatable(loss, reduction, gen):
    x, y = randn(40009, gen=gen, dtype=torch.float32), randn(40009, gen=gen, dtype=torch.float32)
    g = randn(40009, gen=gen, dtype=torch.float32) if reduction == "none" else None
    first, second = run(loss.ours, x, y, reduction, g), run(loss.ours, x, y, reduction, g)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_independent_of_thread_count(loss, reduction, masked, dtype, gen):
    """The CPU kernel sums fixed 8192-element blocks in block order, whatever the thread count."""
    x, y = randn(96, 1031, gen=gen, dtype=dtype), randn(96, 1031, gen=gen, dtype=dtype)
    mask = (torch.rand(96, generator=gen) > 0.2) if masked else None
    results = []
    for threads in (1, 2, 3, 4):
        torch.set_num_threads(threads)
        results.append(run(loss.ours, x, y, reduction, mask=mask))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_bad_arguments(loss):
    name = loss.name
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=rf"{name}: .*\(2, 3, 4\).*\(5, 4\).*do not broadcast"):
        loss.ours(x, torch.zeros(5, 4))
    with pytest.raises(
        TypeError, match=rf"{name}: input must be a floating-point tensor, got dtype torch.int64"
    ):
        loss.ours(torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(
        TypeError, match=rf"{name}: target must be a floating-point tensor, got dtype torch.int32"
    ):
        loss.ours(torch.zeros(3), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match=rf"{name}: target must be a Tensor, got list"):
        loss.ours(torch.zeros(3), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=rf"{name}: reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        loss.ours(x, x, "avg")
    with pytest.raises(
        ValueError, match=rf"{name}: mask of shape \(3, 3\) must equal the leading dims .*\(2, 3, 4\)"
    ):
        loss.ours(x, x, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=rf"{name}: mask of shape \(2, 3, 4, 1\)"):
        loss.ours(x, x, mask=torch.ones(2, 3, 4, 1))
    with pytest.raises(
        TypeError, match=rf"{name}: mask must be a bool or floating-point tensor, got torch.int64"
    ):
        loss.ours(x, x, mask=torch.ones(2, 3, dtype=torch.long))


@requires_cuda
@pytest.mark.parametrize("loss", [SMOOTH_L1, MSE], ids=str)
def test_mixed_devices_cuda(loss):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"input is on cpu but target is on cuda"):
        loss.ours(x, x.cuda())
    with pytest.raises(ValueError, match=r"mask is on cuda:0 but input is on cpu"):
        loss.ours(x, x, mask=torch.ones(2, device="cuda"))


f32 = torch.zeros(2, 3)
RAW_OP_ERRORS = {
    "negative beta": (
        lambda: ops.smooth_l1_loss(f32, f32, -1.0, 1, None, False),
        r"ssl_fast::smooth_l1_loss: beta must be >= 0, got -1",
    ),
    "negative beta backward": (
        lambda: ops.smooth_l1_loss_backward(f32[0, 0], f32, f32, -1.0, 1, None),
        r"ssl_fast::smooth_l1_loss_backward: beta must be >= 0",
    ),
    "reduction 5": (
        lambda: ops.mse_loss(f32, f32, 5, None, False),
        r"ssl_fast::mse_loss: reduction must be 0 \(none\), 1 \(mean\) or 2 \(sum\), got 5",
    ),
    "reduction -1": (
        lambda: ops.smooth_l1_loss(f32, f32, 1.0, -1, None, False),
        r"ssl_fast::smooth_l1_loss: reduction must be",
    ),
    "compute_grad with none": (
        lambda: ops.mse_loss(f32, f32, 0, None, True),
        r"ssl_fast::mse_loss: compute_grad needs reduction mean or sum",
    ),
    "weight dtype": (
        lambda: ops.smooth_l1_loss(f32, f32, 1.0, 1, f32.double(), False),
        r"ssl_fast::smooth_l1_loss: weight must be Float for Float input, got Double",
    ),
    "weight dtype for half": (
        lambda: ops.mse_loss(f32.half(), f32.half(), 1, f32.half(), False),
        r"ssl_fast::mse_loss: weight must be Float for Half input, got Half",
    ),
    "weight shape": (
        lambda: ops.mse_loss(f32, f32, 1, torch.ones(2, 3, 2), False),
        r"ssl_fast::mse_loss: weight of shape \[2, 3, 2\] does not broadcast",
    ),
    "target dtype": (
        lambda: ops.mse_loss(f32, f32.double(), 1, None, False),
        r"ssl_fast::mse_loss: target dtype Double differs from input dtype Float",
    ),
    "integer input": (
        lambda: ops.mse_loss(f32.long(), f32.long(), 1, None, False),
        r"ssl_fast::mse_loss: input must be float16, bfloat16, float32 or float64, got Long",
    ),
    "shapes": (lambda: ops.mse_loss(torch.zeros(3), torch.zeros(4), 1, None, False), r"ssl_fast::mse_loss"),
    "grad_output not 0-dim": (
        lambda: ops.mse_loss_backward(f32, f32, f32, 1, None),
        r"ssl_fast::mse_loss_backward: grad_output of a reduced loss must be 0-dim",
    ),
    "grad_output shape": (
        lambda: ops.smooth_l1_loss_backward(f32[0], f32, f32, 1.0, 0, None),
        r"ssl_fast::smooth_l1_loss_backward: grad_output of shape \[3\] does not match",
    ),
    "grad_output dtype": (
        lambda: ops.mse_loss_backward(f32.double(), f32, f32, 0, None),
        r"ssl_fast::mse_loss_backward: grad_output dtype Double differs",
    ),
}


@pytest.mark.parametrize("case", RAW_OP_ERRORS)
def test_raw_op_errors(case):
    call, match = RAW_OP_ERRORS[case]
    with pytest.raises(RuntimeError, match=match):
        call()


# -- modules, fallback -----------------------------------------------------------------------------

MODULE_ARGS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"size_average": False},
    {"reduce": False},
    {"size_average": True, "reduce": True},
]


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize("kwargs", MODULE_ARGS, ids=str)
@pytest.mark.parametrize(
    "ours_cls, torch_cls, extra",
    [
        (ssl_fast.SmoothL1Loss, torch.nn.SmoothL1Loss, {}),
        (ssl_fast.SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": 0.3}),
        (ssl_fast.MSELoss, torch.nn.MSELoss, {}),
    ],
    ids=["smooth_l1", "smooth_l1-beta0.3", "mse"],
)
def test_modules(ours_cls, torch_cls, extra, kwargs, gen):
    ours, theirs = ours_cls(**kwargs, **extra), torch_cls(**kwargs, **extra)
    assert isinstance(ours, torch_cls)
    assert ours.reduction == theirs.reduction
    x, y = randn(3, 5, 2, gen=gen), randn(3, 5, 2, gen=gen)
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    mask = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.float64)
    fn = ssl_fast.mse_loss if ours_cls is ssl_fast.MSELoss else ssl_fast.smooth_l1_loss
    kw = {"beta": ours.beta} if ours_cls is ssl_fast.SmoothL1Loss else {}
    torch.testing.assert_close(ours(x, y, mask=mask), fn(x, y, reduction=ours.reduction, mask=mask, **kw))


@pytest.mark.parametrize("mask", [None, "bool", "float"])
@reduction_param
@loss_param
def test_torch_backend_matches_kernel(loss, reduction, mask, monkeypatch, gen):
    x, y = randn(3, 7, 5, gen=gen, dtype=torch.float32), randn(3, 7, 5, gen=gen, dtype=torch.float32)
    m = {None: None, "bool": torch.rand(3, 7, generator=gen) > 0.5, "float": torch.rand(3, generator=gen)}[
        mask
    ]
    g = (
        randn(*(m.shape if m is not None else x.shape), gen=gen, dtype=torch.float32)
        if reduction == "none"
        else None
    )
    kernel = run(loss.ours, x, y, reduction, g, mask=m)
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    fallback = run(loss.ours, x, y, reduction, g, mask=m)
    for k, f in zip(kernel, fallback, strict=True):
        torch.testing.assert_close(k, f)


# -- CUDA ------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@dtype_param
@reduction_param
@loss_param
def test_cuda_matches_cpu(loss, reduction, dtype, masked, gen):
    x, y = randn(37, 129, 17, gen=gen, dtype=dtype), randn(37, 129, 17, gen=gen, dtype=dtype)
    mask = (torch.rand(37, 129, generator=gen) > 0.3) if masked else None
    shape = mask.shape if masked else x.shape
    g = randn(*shape, gen=gen, dtype=dtype) if reduction == "none" else None
    cpu = run(loss.ours, x, y, reduction, g, mask=mask)
    ref = run(loss.reference, x.double(), y.double(), reduction, None if g is None else g.double(), mask=mask)
    to_cuda = [None if t is None else t.cuda() for t in (x, y, g, mask)]
    cuda = run(loss.ours, *to_cuda[:2], reduction, to_cuda[2], mask=to_cuda[3])
    for what, d, c, r in zip(("loss", "grad input", "grad target"), cuda, cpu, ref, strict=True):
        assert d.device.type == "cuda"
        assert_accurate(d, c, r, f"CUDA vs CPU {what}")  # the GPU no less accurate than the CPU


# -- binary cross-entropy --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bce:
    """binary_cross_entropy (logits False) or binary_cross_entropy_with_logits, with a weight
    and a pos_weight of the given shapes (None: without)."""

    logits: bool
    weight: tuple[int, ...] | None = None
    pos_weight: tuple[int, ...] | None = None

    def __str__(self) -> str:
        name = "bce_logits" if self.logits else "bce"
        for what, shape in (("w", self.weight), ("pw", self.pos_weight)):
            if shape is not None:
                name += f"-{what}{'x'.join(map(str, shape)) or '0d'}"
        return name

    @property
    def name(self) -> str:
        return "binary_cross_entropy_with_logits" if self.logits else "binary_cross_entropy"

    def inputs(self, *shape: int, gen, dtype=torch.float64, device="cpu"):
        """Input (logits of spread 3, or their sigmoid) and soft targets in [0, 1].
        Probabilities stay eps from 0 and 1, where torch's 16-bit gradient divides by a
        zero (1 - x) x (test_bce_edge_values_as_torch has them)."""
        x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64)
        y = torch.rand(shape, generator=gen, dtype=torch.float64)
        if not self.logits:
            eps = torch.finfo(dtype).eps
            x = torch.sigmoid(x).clamp(eps, 1 - eps)
        return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)

    def weights(self, shape, gen, dtype=torch.float64, device="cpu"):
        """(weight, pos_weight) in [0.5, 2), cut to broadcast to `shape`."""
        out = []
        for w in (self.weight, self.pos_weight):
            if w is not None:
                w = w[len(w) - len(shape) :] if len(w) > len(shape) else w
                w = (0.5 + 1.5 * torch.rand(w, generator=gen, dtype=torch.float64)).to(
                    device=device, dtype=dtype
                )
            out.append(w)
        return tuple(out)

    def _kw(self, weights):
        w, pw = weights
        return {"weight": w, "pos_weight": pw} if self.logits else {"weight": w}

    def ours(self, x, y, reduction="mean", weights=(None, None)):
        return getattr(ssl_fast, self.name)(x, y, reduction=reduction, **self._kw(weights))

    def torch(self, x, y, reduction="mean", weights=(None, None)):
        return getattr(F, self.name)(x, y, reduction=reduction, **self._kw(weights))


BCE, BCE_LOGITS = Bce(False), Bce(True)
BCE_CASES = [
    BCE,
    BCE_LOGITS,
    Bce(False, weight=(5,)),
    Bce(True, weight=(1, 1)),
    Bce(True, pos_weight=(5,)),
    Bce(True, weight=(5,), pos_weight=(1, 5)),
]
bce_param = pytest.mark.parametrize("bce", BCE_CASES, ids=str)


def check_bce_against_torch(bce: Bce, x, y, reduction, grad_output=None, gen=None) -> None:
    """Loss and both gradients under the dtype-aware criterion, weights in x's dtype."""
    weights = bce.weights(x.shape, gen or torch.Generator().manual_seed(5), dtype=x.dtype, device=x.device)
    weights64 = tuple(None if w is None else w.double() for w in weights)
    ours = run(bce.ours, x, y, reduction, grad_output, weights=weights)
    theirs = run(bce.torch, x, y, reduction, grad_output, weights=weights)
    g64 = None if grad_output is None else grad_output.double()
    ref = run(bce.torch, x.double(), y.double(), reduction, g64, weights=weights64)
    for what, o, t, r in zip(("loss", "grad input", "grad target"), ours, theirs, ref, strict=True):
        assert_accurate(o, t, r, f"{bce} {reduction} {what}")


# Every shape without weights; the weights' shapes are written for a last dim of 5.
BCE_SHAPE_CASES = [
    (bce, shape)
    for bce in BCE_CASES
    for shape in [(1,), (7,), (3, 5), (), (1009,), (4, 7, 5)]
    if shape[-1:] == (5,) or (bce.weight is None and bce.pos_weight is None)
]


@pytest.mark.parametrize(
    "bce, shape", BCE_SHAPE_CASES, ids=[f"{b}-{'x'.join(map(str, s)) or '0d'}" for b, s in BCE_SHAPE_CASES]
)
@reduction_param
@dtype_param
def test_bce_matches_torch(bce, shape, dtype, reduction, device, gen):
    x, y = bce.inputs(*shape, gen=gen, dtype=dtype, device=device)
    g = randn(*shape, gen=gen, dtype=dtype, device=device) if reduction == "none" else None
    check_bce_against_torch(bce, x, y, reduction, g, gen)


BCE_LARGE_CASES = [(bce, dtype) for bce in (BCE, BCE_LOGITS) for dtype in FLOAT_DTYPES] + [
    (Bce(True, weight=(127,), pos_weight=(127,)), torch.float32),
    (Bce(False, weight=(401, 1)), torch.bfloat16),
]


@pytest.mark.parametrize(
    "bce, dtype", BCE_LARGE_CASES, ids=[f"{c[0]}-{DTYPE_IDS[c[1]]}" for c in BCE_LARGE_CASES]
)
@pytest.mark.parametrize("mode", ["saved", "not-one", "none"])
def test_bce_large(bce, dtype, mode, device):
    """Many 8192-element blocks split across threads; the gradient saved by the forward
    (grad_output 1), the one the backward op recomputes, and the elementwise loss."""
    gen = torch.Generator().manual_seed(41)
    x, y = bce.inputs(*LARGE, gen=gen, dtype=dtype, device=device)
    reduction = "none" if mode == "none" else "mean"
    g = None
    if mode == "none":
        g = randn(*LARGE, gen=gen, dtype=dtype, device=device)
    elif mode == "not-one":
        g = torch.tensor(-0.75, dtype=dtype, device=device)
    check_bce_against_torch(bce, x, y, reduction, g, gen)


def test_bce_logits_extreme_values_are_accurate():
    """Losses far below 1 keep their relative accuracy in float32, where torch's
    (1 - y) x - log_sigmoid(x) cancels (even in float64: it gives 0 beyond x = -34 for y = 0).
    Reference: max(x, 0) - x y + log1p(exp(-|x|)) in float64."""
    x = torch.tensor([-80.0, -40.0, -30.0, -20.0, -9.0, 9.0, 20.0, 30.0, 40.0, 80.0])
    y = (x > 0).float()
    ours = ssl_fast.binary_cross_entropy_with_logits(x, y, reduction="none").double()
    x64, y64 = x.double(), y.double()
    ref = x64.clamp(min=0) - x64 * y64 + torch.log1p(torch.exp(-x64.abs()))
    torch.testing.assert_close(ours, ref, rtol=3e-7, atol=0)


EDGE_PROBS = [0.0, 1.0, 0.0, 1.0, 0.5, 1e-30, 1 - 2**-24, 1e-44, 0.999, 1e-7, 0.25, 0.75]
EDGE_PROB_TARGETS = [0.0, 1.0, 1.0, 0.0, 0.3, 1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.2]
EDGE_LOGITS = [-100.0, 100.0, math.inf, -math.inf, math.nan, math.inf, -math.inf, 0.0, 1e4, -1e4, 30.0, -17.0]
EDGE_LOGIT_TARGETS = [1.0, 0.0, 0.5, 0.5, 0.5, 1.0, 0.0, 0.3, 0.0, 1.0, 1.0, 0.0]


@dtype_param
@reduction_param
@pytest.mark.parametrize("bce", [BCE, BCE_LOGITS, Bce(True, pos_weight=(12,))], ids=str)
def test_bce_edge_values_as_torch(bce, reduction, dtype):
    """Probabilities 0 and 1 (log terms clamped at -100, gradients +-1e12), tiny ones;
    logits +-100, +-inf, NaN: values and gradients where torch has them.

    For 16-bit probabilities the yardstick is torch in float32, rounded: ssl_fast computes
    in float32, where torch's 16-bit gradient divides by max((1 - x) x, 1e-12) with 1e-12
    rounded to 0 (so 0/0 = NaN at x = y = 0)."""
    values, targets = (EDGE_LOGITS, EDGE_LOGIT_TARGETS) if bce.logits else (EDGE_PROBS, EDGE_PROB_TARGETS)
    x, y = torch.tensor(values, dtype=dtype), torch.tensor(targets, dtype=dtype)
    weights = bce.weights(x.shape, torch.Generator().manual_seed(3), dtype=dtype)
    g = torch.linspace(-1, 1, len(x), dtype=dtype) if reduction == "none" else None
    ours = run(bce.ours, x, y, reduction, g, weights=weights)
    if bce.logits or dtype.itemsize > 2:
        theirs = run(bce.torch, x, y, reduction, g, weights=weights)
    else:
        as32 = [None if t is None else t.float() for t in (x, y, g, *weights)]
        theirs = run(bce.torch, *as32[:2], reduction, as32[2], weights=tuple(as32[3:]))
        theirs = tuple(t.to(dtype) for t in theirs)
    ref = run(
        bce.torch,
        x.double(),
        y.double(),
        reduction,
        None if g is None else g.double(),
        weights=tuple(None if w is None else w.double() for w in weights),
    )
    for what, o, t, r in zip(("loss", "grad input", "grad target"), ours, theirs, ref, strict=True):
        assert_accurate(o, t, r, f"{bce} {reduction} {what}")


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 5)], ids=str)
@reduction_param
@pytest.mark.parametrize("bce", [BCE, BCE_LOGITS], ids=str)
def test_bce_empty(bce, reduction, shape):
    x, y = torch.empty(shape), torch.empty(shape)
    ours, theirs = run(bce.ours, x, y, reduction), run(bce.torch, x, y, reduction)
    if reduction == "mean":
        assert ours[0].isnan()
    for o, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(o, t, equal_nan=True)


@pytest.mark.parametrize("view", ["transposed", "stepped", "transposed_large", "both_strided_large"])
@reduction_param
@pytest.mark.parametrize("bce", [BCE, Bce(True, weight=(1,), pos_weight=(1,))], ids=str)
def test_bce_non_contiguous(bce, reduction, view, device, gen):
    xs, xv, ys, yv = VIEWS[view]
    xb, yb = bce.inputs(*xs, gen=gen, device=device)
    yb = torch.rand(ys, generator=gen, dtype=torch.float64).to(device)
    weights = bce.weights((1, 1), gen, device=device)
    results = []
    for fn in (bce.ours, bce.torch):
        xl, yl = xb.clone().requires_grad_(), yb.clone().requires_grad_()
        x, y = xv(xl), yv(yl)
        assert not (x.is_contiguous() and y.is_contiguous())
        out = fn(x, y, reduction, weights=weights)
        out.backward(torch.ones_like(out) * 1.5)
        results.append((out, xl.grad, yl.grad))
    for o, t in zip(*results, strict=True):
        torch.testing.assert_close(o, t)


@pytest.mark.parametrize(
    "weight, pos_weight", [((4, 1, 1), None), ((6,), (6,)), ((), (1, 5, 1)), (None, (5, 6))]
)
@reduction_param
def test_bce_weight_broadcasting(weight, pos_weight, reduction, gen):
    """weight and pos_weight broadcast to the input; a [C] pos_weight weighs the last dim."""
    for bce in (Bce(True, weight, pos_weight), Bce(False, weight)):
        x, y = bce.inputs(4, 5, 6, gen=gen)
        weights = bce.weights(x.shape, gen)
        g = randn(4, 5, 6, gen=gen) if reduction == "none" else None
        ours, theirs = (
            run(bce.ours, x, y, reduction, g, weights=weights),
            run(bce.torch, x, y, reduction, g, weights=weights),
        )
        for o, t in zip(ours, theirs, strict=True):
            torch.testing.assert_close(o, t)


@reduction_param
@bce_param
def test_bce_grad_output_not_one(bce, reduction, device, gen):
    x, y = bce.inputs(6, 5, gen=gen, device=device)
    weights = bce.weights(x.shape, gen, device=device)
    assert_same_grads_for_grad_output_not_one((bce.ours, bce.torch), x, y, reduction, weights=weights)


@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True), (False, False)], ids=str)
@reduction_param
@pytest.mark.parametrize("bce", [BCE, Bce(True, pos_weight=(9,))], ids=str)
def test_bce_requires_grad_combinations(bce, reduction, needs, gen):
    x, y = bce.inputs(5, 9, gen=gen)
    weights = bce.weights(x.shape, gen)
    assert_same_for_requires_grad((bce.ours, bce.torch), x, y, reduction, needs, weights=weights)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bce", [BCE, BCE_LOGITS], ids=str)
def test_bce_retain_graph_two_backwards(bce, reduction, gen):
    x, y = bce.inputs(20011, gen=gen)
    x.requires_grad_(), y.requires_grad_()
    out = bce.ours(x, y, reduction)
    first = torch.autograd.grad(out, (x, y), retain_graph=True)
    second = torch.autograd.grad(out, (x, y), retain_graph=True)
    expected = torch.autograd.grad(bce.torch(x, y, reduction), (x, y))
    for f, s, e in zip(first, second, expected, strict=True):
        assert torch.equal(f, s)
        torch.testing.assert_close(f, e)


@pytest.mark.parametrize(
    "check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck], ids=["grad", "gradgrad"]
)
@reduction_param
@bce_param
def test_bce_gradcheck(bce, reduction, check, gen):
    """First derivatives in input and target, and second ones (the PyTorch formula)."""
    x, y = bce.inputs(2, 3, 5, gen=gen)
    if not bce.logits:
        x = x.clamp(0.05, 0.95)  # finite differences stay inside [0, 1]
    y = y.clamp(0.05, 0.95)
    weights = bce.weights(x.shape, gen)
    assert check(
        lambda a, b: bce.ours(a, b, reduction, weights=weights), (x.requires_grad_(), y.requires_grad_())
    )


BCE_OPCHECK_CASES = [  # (requires_grad, weighted, pos_weighted, reduction code, compute_grad)
    (False, False, False, 0, False),
    (True, True, True, 1, True),
    (True, False, True, 2, False),
    (False, True, False, 2, True),
]


@pytest.mark.filterwarnings("ignore:.*an autograd kernel was not registered")
@pytest.mark.parametrize("case", BCE_OPCHECK_CASES, ids=str)
@pytest.mark.parametrize("logits", [False, True], ids=["bce", "bce_logits"])
def test_bce_opcheck(logits, case, gen):
    requires_grad, weighted, pos_weighted, reduction, compute_grad = case
    x = torch.rand(3, 5, generator=gen).requires_grad_(requires_grad)
    y = torch.rand(3, 5, generator=gen)
    w = torch.rand(3, 1, generator=gen) if weighted else None
    name = "binary_cross_entropy_with_logits" if logits else "binary_cross_entropy"
    params = (torch.rand(5, generator=gen) + 0.5 if pos_weighted else None,) if logits else ()
    torch.library.opcheck(getattr(ops, name), (x, y, *params, reduction, w, compute_grad))
    g = torch.randn((3, 5) if reduction == 0 else (), generator=gen)
    torch.library.opcheck(getattr(ops, f"{name}_backward"), (g, x, y, *params, reduction, w))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_bce_torch_compile_fullgraph(gen):
    w, pw = torch.rand(6, generator=gen), torch.rand(6, generator=gen) + 0.5

    def f(x, y, _):
        return (
            ssl_fast.binary_cross_entropy_with_logits(x, y, pos_weight=pw)
            + ssl_fast.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none").sum()
            + ssl_fast.binary_cross_entropy(torch.sigmoid(x), y, weight=w, reduction="sum")
        )

    x, y = BCE_LOGITS.inputs(4, 6, gen=gen, dtype=torch.float32)
    compiled = torch.compile(f, fullgraph=True)
    results = [run(fn, x, y, None) for fn in (f, compiled)]
    for eager, comp in zip(*results, strict=True):
        torch.testing.assert_close(comp, eager)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("bce", [BCE, Bce(True, weight=(1031,), pos_weight=(1031,))], ids=str)
@pytest.mark.usefixtures("restore_threads")
def test_bce_independent_of_thread_count(bce, dtype, reduction, gen):
    x, y = bce.inputs(96, 1031, gen=gen, dtype=dtype)
    weights = bce.weights(x.shape, gen)
    weights = tuple(None if w is None else w.float() for w in weights)
    results = []
    for threads in (1, 2, 3, 4):
        torch.set_num_threads(threads)
        results.append(run(bce.ours, x, y, reduction, weights=weights))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}


@pytest.mark.parametrize("where", ["input", "target"])
@pytest.mark.parametrize("bad", [-0.25, 1.5, math.nan, -math.inf])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_outside_unit_interval_is_an_error(reduction, bad, where, device):
    """As torch: an input (or a target) outside [0, 1] fails, in every pass of the kernel."""
    x, y = torch.full((20000,), 0.5, device=device), torch.full((20000,), 0.5, device=device)
    (x if where == "input" else y)[12345] = bad
    match = rf"all elements of {where} should be between 0 and 1"
    with pytest.raises(RuntimeError, match=match):
        ssl_fast.binary_cross_entropy(x.requires_grad_(), y, reduction=reduction)
    with pytest.raises(RuntimeError, match=match):
        ops.binary_cross_entropy_backward(
            torch.ones((20000,) if reduction == "none" else ()),
            x.detach(),
            y,
            REDUCTION_CODES[reduction],
            None,
        )


def test_bce_bad_arguments():
    x = torch.rand(2, 3)
    for name in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        fn = getattr(ssl_fast, name)
        with pytest.raises(
            ValueError, match=rf"{name}: target of shape \(3,\) must have the input's shape \(2, 3\)"
        ):
            fn(x, torch.rand(3))
        with pytest.raises(TypeError, match=rf"{name}: input must be a floating-point tensor"):
            fn(x.long(), x.long())
        with pytest.raises(
            ValueError, match=rf"{name}: reduction must be 'none', 'mean' or 'sum', got 'avg'"
        ):
            fn(x, x, reduction="avg")
        with pytest.raises(
            ValueError,
            match=rf"{name}: weight of shape \(4,\) does not broadcast to the input shape \(2, 3\)",
        ):
            fn(x, x, weight=torch.ones(4))
        with pytest.raises(ValueError, match=rf"{name}: weight of shape \(2, 2, 3\) does not broadcast"):
            fn(x, x, weight=torch.ones(2, 2, 3))
        with pytest.raises(
            TypeError, match=rf"{name}: weight must be a floating-point tensor, got torch.int64"
        ):
            fn(x, x, weight=torch.ones(3, dtype=torch.long))
        with pytest.raises(
            RuntimeError, match=rf"'{name}' is not differentiable with respect to argument 'weight'"
        ):
            fn(x, x, weight=torch.ones(3, requires_grad=True))
    with pytest.raises(
        TypeError,
        match=r"binary_cross_entropy: target dtype torch.float64 differs from input dtype torch.float32",
    ):
        ssl_fast.binary_cross_entropy(x, x.double())
    with pytest.raises(RuntimeError, match=r"not differentiable with respect to argument 'pos_weight'"):
        ssl_fast.binary_cross_entropy_with_logits(x, x, pos_weight=torch.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast"):
        ssl_fast.binary_cross_entropy_with_logits(x, x, pos_weight=torch.ones(2))
    with torch.no_grad():  # as torch, a weight that requires grad is fine where nothing is recorded
        ssl_fast.binary_cross_entropy(x, x, weight=torch.ones(3, requires_grad=True))


@pytest.mark.parametrize("input_dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
@dtype_param
def test_bce_logits_mixed_dtypes_as_torch(dtype, input_dtype, gen):
    """torch returns the target's dtype, whatever the input's."""
    x, y = BCE_LOGITS.inputs(4, 3, gen=gen, dtype=input_dtype)
    y = y.to(dtype)
    ours, theirs = run(BCE_LOGITS.ours, x, y, "mean"), run(BCE_LOGITS.torch, x, y, "mean")
    for o, t in zip(ours, theirs, strict=True):
        assert o.dtype == t.dtype
        # torch takes log_sigmoid in the input's dtype before casting: the lower one's accuracy
        tol = 2e-2 if min(dtype.itemsize, input_dtype.itemsize) == 2 else 1e-5
        torch.testing.assert_close(o, t, rtol=tol, atol=tol)


BCE_RAW_OP_ERRORS = {
    "pos_weight dtype": (
        lambda: ops.binary_cross_entropy_with_logits(f32, f32, f32.double(), 1, None, False),
        r"ssl_fast::binary_cross_entropy_with_logits: pos_weight must be Float for Float input, got Double",
    ),
    "pos_weight shape": (
        lambda: ops.binary_cross_entropy_with_logits_backward(f32[0, 0], f32, f32, torch.ones(4), 1, None),
        r"ssl_fast::binary_cross_entropy_with_logits_backward: pos_weight of shape \[4\] does not broadcast",
    ),
    "compute_grad with none": (
        lambda: ops.binary_cross_entropy(f32, f32, 0, None, True),
        r"ssl_fast::binary_cross_entropy: compute_grad needs reduction mean or sum",
    ),
    "input range": (
        lambda: ops.binary_cross_entropy(f32 + 2, f32, 1, None, False),
        r"ssl_fast::binary_cross_entropy: all elements of input should be between 0 and 1",
    ),
}


@pytest.mark.parametrize("case", BCE_RAW_OP_ERRORS)
def test_bce_raw_op_errors(case):
    call, match = BCE_RAW_OP_ERRORS[case]
    with pytest.raises(RuntimeError, match=match):
        call()


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize("kwargs", MODULE_ARGS, ids=str)
@pytest.mark.parametrize("bce", [BCE, Bce(False, weight=(5,)), BCE_LOGITS, Bce(True, (2, 1), (5,))], ids=str)
def test_bce_modules(bce, kwargs, gen):
    x, y = bce.inputs(2, 5, gen=gen, dtype=torch.float32)
    w, pw = bce.weights(x.shape, gen, dtype=torch.float32)
    extra = {"weight": w, **({"pos_weight": pw} if bce.logits else {})}
    ours_cls, torch_cls = (
        (ssl_fast.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss)
        if bce.logits
        else (ssl_fast.BCELoss, torch.nn.BCELoss)
    )
    ours, theirs = ours_cls(**kwargs, **extra), torch_cls(**kwargs, **extra)
    assert isinstance(ours, torch_cls)
    assert ours.reduction == theirs.reduction
    assert set(dict(ours.named_buffers())) == set(dict(theirs.named_buffers()))
    results = [run(lambda a, b, _, m=m: m(a, b), x, y, None) for m in (ours, theirs)]
    for o, t in zip(*results, strict=True):
        torch.testing.assert_close(o, t)


@reduction_param
@bce_param
def test_bce_torch_backend_matches_kernel(bce, reduction, monkeypatch, gen):
    x, y = bce.inputs(3, 7, 5, gen=gen, dtype=torch.float32)
    weights = bce.weights(x.shape, gen, dtype=torch.float32)
    g = randn(3, 7, 5, gen=gen, dtype=torch.float32) if reduction == "none" else None
    kernel = run(bce.ours, x, y, reduction, g, weights=weights)
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    fallback = run(bce.ours, x, y, reduction, g, weights=weights)
    for k, f in zip(kernel, fallback, strict=True):
        torch.testing.assert_close(k, f)


@requires_cuda
@dtype_param
@reduction_param
@bce_param
def test_bce_cuda_matches_cpu(bce, reduction, dtype, gen):
    x, y = bce.inputs(37, 129, 5, gen=gen, dtype=dtype)
    g = randn(37, 129, 5, gen=gen, dtype=dtype) if reduction == "none" else None
    weights = bce.weights(x.shape, gen, dtype=dtype)
    w64 = tuple(None if w is None else w.double() for w in weights)
    cpu = run(bce.ours, x, y, reduction, g, weights=weights)
    ref = run(bce.torch, x.double(), y.double(), reduction, None if g is None else g.double(), weights=w64)
    on_cuda = [None if t is None else t.cuda() for t in (x, y, g, *weights)]
    cuda = run(bce.ours, *on_cuda[:2], reduction, on_cuda[2], weights=tuple(on_cuda[3:]))
    for what, d, c, r in zip(("loss", "grad input", "grad target"), cuda, cpu, ref, strict=True):
        assert d.device.type == "cuda"
        assert_accurate(d, c, r, f"CUDA vs CPU {what}")


@requires_cuda
def test_bce_cuda_outside_unit_interval_asserts():
    """A device-side assertion, as in torch's CUDA kernel; it poisons the process's CUDA
    context, so it runs in a subprocess."""
    script = (
        "import torch, ssl_fast; x = torch.full((8,), 0.5, device='cuda'); x[3] = 2.0; "
        "ssl_fast.binary_cross_entropy(x, torch.zeros(8, device='cuda')).item()"
    )
    root = Path(__file__).resolve().parents[1]
    run_ = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert run_.returncode != 0
    assert "device-side assert" in run_.stderr or "all elements of input" in run_.stderr
