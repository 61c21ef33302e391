"""SupCon and DCL / DCLW: ssl_fast.sup_con / dcl and their modules against materialised
formulas, pytorch-metric-learning's SupConLoss and lightly's DCLLoss / DCLWLoss."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from conftest import FLOAT_DTYPES, randn
from test_contrastive import REDUCTIONS, check_against_reference, value_and_grads, views

import ssl_fast
from ssl_fast import reference
from ssl_fast.bench.peers import lightly_loss
from ssl_fast.ops.contrastive_family import negative_mises_fisher_weights


def pml_sup_con():
    """pytorch-metric-learning's SupConLoss class; the test skips without it."""
    return pytest.importorskip("pytorch_metric_learning.losses").SupConLoss


def lightly_dcl(name: str):
    try:
        return lightly_loss("dcl_loss", name)
    except ImportError:
        pytest.skip("lightly is not installed")


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A weight_fn with a gradient (lightly's docstring example)."""
    return ((a - b) ** 2).sum(1)


# ----------------------------------------------------------------- SupCon

# (rows or (samples, views), features, classes): a single row, two rows of one class, odd
# and prime sizes, several 256-row tiles, views of samples with shared labels.
SUP_CON_CASES = {
    "1": ((1,), 4, 1),
    "2 one class": ((2,), 3, 1),
    "7 primes": ((7,), 5, 3),
    "130": ((130,), 16, 9),
    "300": ((300,), 33, 40),
    "views 37x3": ((37, 3), 8, 11),
}


def sup_con_inputs(case: str, gen, dtype=torch.float64, requires_grad=True):
    rows, d, classes = SUP_CON_CASES[case]
    z = randn(*rows, d, gen=gen, dtype=dtype).requires_grad_(requires_grad)
    return z, torch.randint(0, classes, rows[:1], generator=gen)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", SUP_CON_CASES, ids=str)
def test_sup_con_matches_formula(case, reduction, dtype, gen):
    z, labels = sup_con_inputs(case, gen, dtype)
    check_against_reference(
        lambda x: ssl_fast.sup_con(x, labels, 0.1, reduction),
        lambda x: reference.sup_con(x, labels, 0.1, reduction),
        (z,),
        f"sup_con {case} {reduction} {dtype}",
        scale=10.0,
    )


# Labels where rows lack a positive (singletons), every row does (pairs), none does
# (all distinct), or none has a negative (one class).
PML_LABELS = {
    "mixed": lambda m, g: torch.randint(0, max(1, m // 3), (m,), generator=g),
    "singletons": lambda m, g: torch.cat([torch.zeros(m - m // 2), torch.arange(1, m // 2 + 1)]).long(),
    "pairs": lambda m, g: torch.arange(m) // 2,
    "distinct": lambda m, g: torch.arange(m) * 7 - 3,
    "one class": lambda m, g: torch.full((m,), 5),
}


@pytest.mark.parametrize("m", [1, 2, 5, 13, 300])
@pytest.mark.parametrize("labels", PML_LABELS, ids=str)
def test_sup_con_matches_pytorch_metric_learning(labels, m, gen):
    SupConLoss = pml_sup_con()
    z = randn(m, 12, gen=gen).requires_grad_()
    y = PML_LABELS[labels](m, gen)
    for temperature in (0.07, 0.5):
        ours, grads = value_and_grads(lambda x, t=temperature: ssl_fast.SupConLoss(t)(x, y), z)
        theirs, their_grads = value_and_grads(lambda x, t=temperature: SupConLoss(t)(x, y), z)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads, their_grads, rtol=1e-12, atol=1e-12)


def test_sup_con_views_are_rows_with_shared_labels(gen):
    """[N, V, D] with labels [N] is [N V, D] with each label repeated V times; labels=None
    makes the views of a sample its only positives (SimCLR with V views; V = 2: NT-Xent)."""
    z = randn(9, 3, 6, gen=gen)
    labels = torch.randint(0, 4, (9,), generator=gen)
    rows = ssl_fast.sup_con(z.flatten(0, 1), labels.repeat_interleave(3), reduction="none")
    torch.testing.assert_close(ssl_fast.sup_con(z, labels, reduction="none"), rows.view(9, 3))
    torch.testing.assert_close(ssl_fast.sup_con(z), ssl_fast.sup_con(z, torch.arange(9)))
    pair = randn(9, 2, 6, gen=gen)
    nt_xent = ssl_fast.nt_xent(pair[:, 0], pair[:, 1], 0.3)
    torch.testing.assert_close(ssl_fast.sup_con(pair, temperature=0.3), nt_xent)


def test_sup_con_label_values_and_order_do_not_matter(gen):
    """Any integer labels (negative, sparse, int8): only their equality counts."""
    z, labels = sup_con_inputs("130", gen)
    base = ssl_fast.sup_con(z, labels, reduction="none")
    for other in (labels * 1000 - 77, (labels - 4).to(torch.int8), labels.int()):
        torch.testing.assert_close(ssl_fast.sup_con(z, other, reduction="none"), base)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sup_con_low_temperature_in_16_bit(dtype, gen):
    z = randn(200, 16, gen=gen, dtype=dtype).requires_grad_()
    labels = torch.randint(0, 20, (200,), generator=gen)
    check_against_reference(
        lambda x: ssl_fast.sup_con(x, labels, 0.01, "none"),
        lambda x: reference.sup_con(x, labels, 0.01, "none"),
        (z,),
        f"sup_con t=0.01 {dtype}",
        scale=100.0,
    )


# ----------------------------------------------------------------- DCL, DCLW

DCL_SIZES = [(2, 4), (3, 3), (13, 7), (130, 16), (300, 33)]
WEIGHTS = {
    "dcl": None,
    "dclw": functools.partial(negative_mises_fisher_weights, sigma=0.5),
    "custom": squared_distance,
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
@pytest.mark.parametrize("n,d", DCL_SIZES, ids=str)
def test_dcl_matches_formula(n, d, weights, reduction, dtype, gen):
    z0, z1 = views(n, d, gen, dtype)
    weight_fn = WEIGHTS[weights]
    check_against_reference(
        lambda a, b: ssl_fast.dcl(a, b, 0.1, weight_fn, reduction),
        lambda a, b: reference.dcl(a, b, 0.1, weight_fn, reduction),
        (z0, z1),
        f"dcl {weights} {n}x{d} {reduction} {dtype}",
        scale=10.0,
    )


@pytest.mark.parametrize("n", [1, 2, 3, 13, 300])
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_dcl_matches_lightly(weights, n, gen):
    """Values and gradients in float64, and -inf for a single pair (no negative), whose
    gradients are the positive term's alone."""
    z0, z1 = views(n, 9, gen)
    for temperature in (0.1, 0.5):
        if weights == "dclw":
            ours, theirs = ssl_fast.DCLWLoss(temperature, 0.7), lightly_dcl("DCLWLoss")(temperature, 0.7)
        else:
            w = WEIGHTS[weights]
            ours, theirs = ssl_fast.DCLLoss(temperature, w), lightly_dcl("DCLLoss")(temperature, w)
        loss, grads = value_and_grads(ours, z0, z1)
        with warnings.catch_warnings():  # DCLW's weights: lightly copies a tensor with torch.tensor
            warnings.simplefilter("ignore", UserWarning)
            their_loss, their_grads = value_and_grads(theirs, z0, z1)
        torch.testing.assert_close(loss, their_loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads, their_grads, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_dcl_low_temperature_in_16_bit(dtype, gen):
    z0, z1 = views(200, 16, gen, dtype)
    loss, grads = value_and_grads(lambda a, b: ssl_fast.dcl(a, b, 0.01), z0, z1)
    assert torch.isfinite(loss).all() and all(torch.isfinite(g).all() for g in grads)
    for weights, weight_fn in WEIGHTS.items():
        check_against_reference(
            lambda a, b, w=weight_fn: ssl_fast.dcl(a, b, 0.01, w, "none"),
            lambda a, b, w=weight_fn: reference.dcl(a, b, 0.01, w, "none"),
            (z0, z1),
            f"dcl {weights} t=0.01 {dtype}",
            scale=100.0,
        )


@pytest.mark.parametrize("temperature", [0.1, 0.05, 0.02])
def test_dcl_aligned_views_keep_float32_accuracy(temperature, gen):
    """Views nearly aligned, as training makes them: each positive dominates its row's
    NT-Xent sum, whose log-sum-exp minus the positive would cancel to rounding noise (or
    NaN); the denominators built without the positive keep the formula's accuracy."""
    z0 = randn(256, 128, gen=gen, dtype=torch.float32)
    z1 = (z0 + 0.1 * randn(256, 128, gen=gen, dtype=torch.float32)).requires_grad_()
    check_against_reference(
        lambda a, b: ssl_fast.dcl(a, b, temperature, reduction="none"),
        lambda a, b: reference.dcl(a, b, temperature, reduction="none"),
        (z0.requires_grad_(), z1),
        f"dcl aligned t={temperature}",
        scale=1 / temperature,
    )


# ----------------------------------------------------------------- both


def test_grad_output_not_one_and_non_contiguous(gen):
    z = randn(20, 130, gen=gen, dtype=torch.float32).T.requires_grad_()  # [130, 20], strided
    labels = torch.randint(0, 9, (130,), generator=gen)
    check_against_reference(
        lambda x: ssl_fast.sup_con(x, labels, 0.2, "none"),
        lambda x: reference.sup_con(x, labels, 0.2, "none"),
        (z,), "sup_con strided weighted", weight=torch.rand(130, generator=gen), scale=5.0,
    )
    z0 = randn(260, 20, gen=gen, dtype=torch.float32)[:, ::2]  # no gradient, strided
    z1 = randn(10, 260, gen=gen, dtype=torch.float32).T.requires_grad_()
    check_against_reference(
        lambda a, b: ssl_fast.dcl(a, b, 0.2, squared_distance, "none"),
        lambda a, b: reference.dcl(a, b, 0.2, squared_distance, "none"),
        (z0, z1), "dcl strided weighted", weight=torch.rand(520, generator=gen), scale=5.0,
    )


def test_gradcheck(gen):
    z, labels = sup_con_inputs("7 primes", gen)
    assert torch.autograd.gradcheck(lambda x: ssl_fast.sup_con(x, labels, 0.5, "none"), (z,))
    views3 = randn(3, 2, 4, gen=gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ssl_fast.sup_con(x, temperature=0.3), (views3,))
    z0, z1 = views(3, 4, gen)
    assert torch.autograd.gradcheck(lambda a, b: ssl_fast.dcl(a, b, 0.5, reduction="none"), (z0, z1))
    assert torch.autograd.gradcheck(lambda a, b: ssl_fast.dcl(a, b, 0.3, squared_distance), (z0, z1))
    assert torch.autograd.gradgradcheck(lambda x: ssl_fast.sup_con(x, labels, 0.5), (z,))
    assert torch.autograd.gradgradcheck(lambda a, b: ssl_fast.dcl(a, b, 0.5), (z0, z1))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_torch_compile_fullgraph(gen):
    labels = torch.randint(0, 3, (7,), generator=gen)
    dclw = ssl_fast.DCLWLoss(0.2)

    def f(z, views3, z0, z1):
        return (
            ssl_fast.sup_con(z, labels, 0.1)
            + ssl_fast.sup_con(views3, reduction="sum")
            + ssl_fast.dcl(z0, z1, 0.2, squared_distance)
            + dclw(z0, z1)
        )

    inputs = [randn(7, 5, gen=gen, dtype=torch.float32).requires_grad_(),
              randn(4, 3, 5, gen=gen, dtype=torch.float32).requires_grad_(), *views(6, 5, gen, torch.float32)]
    eager, eager_grads = value_and_grads(f, *inputs)
    comp, comp_grads = value_and_grads(torch.compile(f, fullgraph=True), *inputs)
    torch.testing.assert_close(comp, eager)
    torch.testing.assert_close(comp_grads, eager_grads)


def test_torch_backend_matches_kernel(monkeypatch, gen):
    z, labels = sup_con_inputs("300", gen, torch.float32)
    z0, z1 = views(40, 6, gen, torch.float32)

    def run():
        return (value_and_grads(lambda x: ssl_fast.sup_con(x, labels), z),
                value_and_grads(ssl_fast.DCLWLoss(), z0, z1))

    kernel = run()
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    torch.testing.assert_close(run(), kernel)


def test_modules_are_the_functions(gen):
    z, labels = sup_con_inputs("130", gen, torch.float32)
    module = ssl_fast.SupConLoss(0.2, "sum")
    torch.testing.assert_close(module(z, labels), ssl_fast.sup_con(z, labels, 0.2, "sum"))
    z0, z1 = views(9, 4, gen, torch.float32)
    torch.testing.assert_close(ssl_fast.DCLLoss(0.3)(z0, z1), ssl_fast.dcl(z0, z1, 0.3))
    weights = functools.partial(negative_mises_fisher_weights, sigma=0.2)
    torch.testing.assert_close(ssl_fast.DCLWLoss(0.3, sigma=0.2)(z0, z1), ssl_fast.dcl(z0, z1, 0.3, weights))


def test_bad_arguments(gen):
    z = randn(4, 3, gen=gen, dtype=torch.float32)
    y = torch.tensor([0, 1, 0, 1])
    cases = [
        (lambda: ssl_fast.sup_con(z, y[:3]), ValueError, r"labels must have shape \[4\] .* got \(3,\)"),
        (lambda: ssl_fast.sup_con(z, y[None]), ValueError, r"labels must have shape \[4\]"),
        (lambda: ssl_fast.sup_con(z, y.float()), TypeError, "an integer tensor, got dtype torch.float32"),
        (lambda: ssl_fast.sup_con(z, y.bool()), TypeError, "got dtype torch.bool"),
        (lambda: ssl_fast.sup_con(z, [0, 1, 0, 1]), TypeError, "labels must be a Tensor, got list"),
        (lambda: ssl_fast.sup_con(z, y.to("meta")), ValueError, "labels is on meta but z is on cpu"),
        (lambda: ssl_fast.sup_con(z), ValueError, r"\[N, D\] embeddings need labels"),
        (lambda: ssl_fast.sup_con(z[None, None], y), ValueError, r"\[N, V, D\] .* got shape \(1, 1, 4, 3\)"),
        (lambda: ssl_fast.sup_con(z[0], y), ValueError, r"got shape \(3,\)"),
        (lambda: ssl_fast.sup_con(z[:0], y[:0]), ValueError, "z is an empty batch"),
        (lambda: ssl_fast.sup_con(z.view(4, 1, 3)[:, :0], y), ValueError, "z is an empty batch"),
        (lambda: ssl_fast.sup_con(z.long(), y), TypeError, "got dtype torch.int64"),
        (lambda: ssl_fast.sup_con(z, y, temperature=0), ValueError, "temperature must be > 0 and finite"),
        (lambda: ssl_fast.sup_con(z, y, reduction="avg"), ValueError, "reduction must be"),
        (lambda: ssl_fast.SupConLoss(temperature=-1), ValueError, "SupConLoss: temperature must be > 0"),
        (lambda: ssl_fast.dcl(z, z[:3]), ValueError, r"same shape, got \(4, 3\) and \(3, 3\)"),
        (lambda: ssl_fast.dcl(z[:0], z[:0]), ValueError, "z0 is an empty batch"),
        (lambda: ssl_fast.dcl(z, z, temperature=math.inf), ValueError, "temperature must be > 0 and finite"),
        (lambda: ssl_fast.dcl(z, z, weight_fn=3), TypeError, "weight_fn must be callable or None, got int"),
        (lambda: ssl_fast.dcl(z, z, weight_fn=lambda a, b: a), ValueError,
         r"weight_fn must return a tensor of 4 weights \(one per pair\), got shape \(4, 3\)"),
        (lambda: ssl_fast.dcl(z, z, weight_fn=lambda a, b: 2.0), ValueError, "got float"),
        (lambda: ssl_fast.DCLLoss(temperature=0), ValueError, "DCLLoss: temperature must be > 0"),
        (lambda: ssl_fast.DCLLoss(weight_fn="w"), TypeError, "DCLLoss: weight_fn must be callable"),
        (lambda: ssl_fast.DCLWLoss(temperature=0), ValueError, "DCLWLoss: temperature must be > 0"),
        (lambda: ssl_fast.DCLWLoss(sigma=0), ValueError, "DCLWLoss: sigma must be > 0 and finite, got 0"),
        (lambda: ssl_fast.DCLWLoss(sigma=None), TypeError, "DCLWLoss: sigma must be a real number"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_gather_distributed_needs_torch_distributed(monkeypatch, gen):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    z = randn(4, 3, gen=gen, dtype=torch.float32)
    lacks = "gather_distributed=True needs torch.distributed, which this build of torch lacks"
    for name, call in {
        "DCLLoss": lambda: ssl_fast.DCLLoss(gather_distributed=True),
        "DCLWLoss": lambda: ssl_fast.DCLWLoss(gather_distributed=True),
        "dcl": lambda: ssl_fast.dcl(z, z, gather_distributed=True),
        "SupConLoss": lambda: ssl_fast.SupConLoss(gather_distributed=True),
        "sup_con": lambda: ssl_fast.sup_con(z, torch.arange(4), gather_distributed=True),
    }.items():
        with pytest.raises(ValueError, match=f"^{name}: {lacks} "):
            call()
    ssl_fast.DCLLoss()(z, z)  # no gathering asked, no question
    ssl_fast.SupConLoss()(z, torch.arange(4))
