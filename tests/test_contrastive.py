"""NT-Xent and InfoNCE: ssl_fast.nt_xent / info_nce and their op against materialised formulas."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FLOAT_DTYPES, assert_accurate, randn, requires_cuda

import ssl_fast
from ssl_fast import reference
from ssl_fast.bench.peers import lightly_loss

ops = torch.ops.ssl_fast

# Row counts around the 256-row tile: one row pair, odd, just past one tile, several tiles.
SIZES = [(1, 4), (3, 3), (130, 16), (300, 33)]
REDUCTIONS = ["mean", "sum", "none"]


def views(n: int, d: int, gen, dtype=torch.float64, requires_grad=True):
    z0 = randn(n, d, gen=gen, dtype=dtype).requires_grad_(requires_grad)
    z1 = randn(n, d, gen=gen, dtype=dtype).requires_grad_(requires_grad)
    return z0, z1


def value_and_grads(fn, *inputs, weight=None):
    """fn(*inputs), and the gradients of sum(weight * fn(*inputs)) for those that require grad."""
    out = fn(*inputs)
    target = out if weight is None else out * weight
    grads = torch.autograd.grad(target.sum(), [x for x in inputs if x.requires_grad])
    return out.detach(), grads


def check_against_reference(ours_fn, ref_fn, inputs, what: str, weight=None, scale: float = 2.0):
    """The criterion of tests/conftest.py: ssl_fast's error (values and gradients) against the
    float64 formula is no worse than the formula's own in the inputs' dtype, plus a tolerance.
    A row's loss is a difference of terms as large as the logit scale (1 / temperature), so
    the tolerance is relative to at least that (the loss of N=1 is exactly 0)."""
    out, grads = value_and_grads(ours_fn, *inputs, weight=weight)
    theirs, their_grads = value_and_grads(ref_fn, *inputs, weight=weight)
    wide = [x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    ref, ref_grads = value_and_grads(ref_fn, *wide, weight=None if weight is None else weight.double())
    assert_accurate(out, theirs, ref, f"{what} value", floor=scale)
    for k, (g, tg, rg) in enumerate(zip(grads, their_grads, ref_grads, strict=True)):
        assert_accurate(g, tg, rg, f"{what} grad {k}", floor=scale)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n,d", SIZES, ids=str)
def test_nt_xent_matches_formula(n, d, reduction, dtype, gen):
    z0, z1 = views(n, d, gen, dtype)
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.5, reduction),
        lambda a, b: reference.nt_xent(a, b, 0.5, reduction),
        (z0, z1),
        f"nt_xent {n}x{d} {reduction} {dtype}",
    )


@pytest.mark.parametrize("d", [1, 1000])
def test_nt_xent_feature_extremes(d, gen):
    z0, z1 = views(37, d, gen, torch.float32)
    check_against_reference(ssl_fast.nt_xent, reference.nt_xent, (z0, z1), f"nt_xent d={d}")


# Scales around the switch from one shared shift (<= 30 in fp32, <= 300 in fp64) to
# per-tile maxima.
@pytest.mark.parametrize(
    "dtype,temperature",
    [(torch.float32, 0.5), (torch.float32, 0.04), (torch.float32, 0.02), (torch.float32, 0.01),
     (torch.float64, 0.01), (torch.float64, 0.002)],
    ids=str,
)
def test_nt_xent_temperatures(dtype, temperature, gen):
    z0, z1 = views(300, 8, gen, dtype)
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, temperature, "none"),
        lambda a, b: reference.nt_xent(a, b, temperature, "none"),
        (z0, z1),
        f"t={temperature} {dtype}",
        scale=1 / temperature,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_temperature_in_16_bit_is_finite(dtype, gen):
    # 1 / 0.01 = 100: exp(100) overflows fp32 and fp16 unless the logits are shifted.
    z0, z1 = views(200, 16, gen, dtype)
    loss, grads = value_and_grads(lambda a, b: ssl_fast.nt_xent(a, b, 0.01), z0, z1)
    assert torch.isfinite(loss).all() and all(torch.isfinite(g).all() for g in grads)
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.01),
        lambda a, b: reference.nt_xent(a, b, 0.01),
        (z0, z1),
        "t=0.01",
        scale=100.0,
    )


@pytest.mark.parametrize("n", [1, 5, 300])
def test_identical_embeddings(n, gen):
    z = randn(1, 7, gen=gen).expand(n, 7)
    loss = ssl_fast.nt_xent(z, z.clone(), 0.3)
    torch.testing.assert_close(loss, torch.tensor(math.log(2 * n - 1), dtype=torch.float64))


def test_grad_output_not_one(gen):
    z0, z1 = views(270, 5, gen, torch.float32)
    weight = torch.rand(540, generator=gen)
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.2, "none"),
        lambda a, b: reference.nt_xent(a, b, 0.2, "none"),
        (z0, z1),
        "weighted rows",
        weight=weight,
        scale=5.0,
    )


def test_non_contiguous_and_no_grad_side(gen):
    big = randn(260, 20, gen=gen, dtype=torch.float32)
    z0 = big[:, ::2].requires_grad_(False)
    z1 = randn(10, 260, gen=gen, dtype=torch.float32).T.requires_grad_(True)
    check_against_reference(ssl_fast.nt_xent, reference.nt_xent, (z0, z1), "strided")


def test_zero_vector_row(gen):
    z0, z1 = views(4, 3, gen, torch.float64, requires_grad=False)
    z0[2] = 0
    z0.requires_grad_(True)
    z1.requires_grad_(True)
    check_against_reference(ssl_fast.nt_xent, reference.nt_xent, (z0, z1), "zero row")


def test_gradcheck_nt_xent(gen):
    z0, z1 = views(3, 4, gen)
    assert torch.autograd.gradcheck(lambda a, b: ssl_fast.nt_xent(a, b, 0.5, "none"), (z0, z1))
    # Large scale: per-tile maxima instead of the shared shift.
    assert torch.autograd.gradcheck(lambda a, b: ssl_fast.nt_xent(a, b, 0.003), (z0 * 0.2, z1 * 0.2))


def test_gradgradcheck(gen):
    z0, z1 = views(3, 4, gen)
    q, k = views(3, 4, gen)
    assert torch.autograd.gradgradcheck(lambda a, b: ssl_fast.nt_xent(a, b, 0.5), (z0, z1))
    assert torch.autograd.gradgradcheck(lambda a, b: ssl_fast.info_nce(a, b, 0.5, symmetric=True), (q, k))


# ----------------------------------------------------------------- InfoNCE


INFO_NCE_CASES = {
    "square": dict(m=5, k=5, labels=False),
    "queue": dict(m=130, k=700, labels=False),
    "labels": dict(m=300, k=270, labels=True),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("case", INFO_NCE_CASES, ids=str)
def test_info_nce_matches_formula(case, symmetric, dtype, gen):
    m, k, with_labels = INFO_NCE_CASES[case].values()
    query = randn(m, 24, gen=gen, dtype=dtype).requires_grad_()
    key = randn(k, 24, gen=gen, dtype=dtype).requires_grad_()
    labels = torch.randint(0, k, (m,), generator=gen) if with_labels else None
    check_against_reference(
        lambda q, c: ssl_fast.info_nce(q, c, 0.1, labels, symmetric, reduction="none"),
        lambda q, c: reference.info_nce(q, c, 0.1, labels, symmetric, reduction="none"),
        (query, key),
        f"info_nce {case} symmetric={symmetric}",
        scale=10.0,
    )


@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
def test_learnable_logit_scale(symmetric, gen):
    query, key = views(7, 5, gen)
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, c, s: ssl_fast.info_nce(q, c, symmetric=symmetric, logit_scale=s), (query, key, logit_scale)
    )
    ours, grads = value_and_grads(
        lambda s: ssl_fast.info_nce(query, key, symmetric=symmetric, logit_scale=s), logit_scale
    )
    ref, ref_grads = value_and_grads(
        lambda s: reference.info_nce(query, key, symmetric=symmetric, logit_scale=s), logit_scale
    )
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grads, ref_grads)


def test_info_nce_module(gen):
    module = ssl_fast.InfoNCELoss(temperature=0.1, symmetric=True, learn_temperature=True)
    assert module.logit_scale.item() == pytest.approx(math.log(10))
    query, key = views(6, 4, gen, torch.float32)
    loss = module(query, key)
    loss.backward()
    assert module.logit_scale.grad is not None and query.grad is not None
    torch.testing.assert_close(loss, reference.info_nce(query, key, 0.1, symmetric=True))


# ----------------------------------------------------------------- the op


def test_op_outputs(gen):
    q = randn(300, 9, gen=gen, dtype=torch.float32)
    k = randn(260, 9, gen=gen, dtype=torch.float32)
    exclude = torch.randint(-1, 260, (300,), generator=gen)
    scale = torch.tensor(5.0)
    for args in ((q, None, scale, None, False), (q, k, scale, exclude, True), (q, k, scale, None, True)):
        for ours, ref in zip(ops.contrastive_lse(*args), reference.contrastive_lse(*args), strict=True):
            torch.testing.assert_close(ours, ref)


OPCHECK_CASES = {
    "self": (dict(k=False, exclude=False, col=False), (True, False, False)),
    "self-scale": (dict(k=False, exclude=False, col=False), (True, False, True)),
    "cross": (dict(k=True, exclude=False, col=True), (True, True, True)),
    "cross-exclude": (dict(k=True, exclude=True, col=False), (True, False, False)),
}


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=str)
def test_opcheck(case, gen):
    (flags, mask) = OPCHECK_CASES[case]
    q = randn(5, 3, gen=gen, dtype=torch.float32).requires_grad_(mask[0])
    k = randn(4, 3, gen=gen, dtype=torch.float32).requires_grad_(mask[1]) if flags["k"] else None
    scale = torch.tensor(2.0).requires_grad_(mask[2])
    exclude = torch.tensor([0, -1, 3, 1, 2]) if flags["exclude"] else None
    torch.library.opcheck(ops.contrastive_lse, (q, k, scale, exclude, flags["col"]))
    q, k, scale = (None if t is None else t.detach() for t in (q, k, scale))
    qn, kn, row, col = ops.contrastive_lse(q, k, scale, exclude, flags["col"])
    grads = (torch.randn_like(qn), torch.randn_like(kn) if k is not None else None, torch.randn_like(row),
             torch.randn_like(col) if flags["col"] else None)
    torch.library.opcheck(
        ops.contrastive_lse_backward, (*grads, q, k, qn, kn, row, col, scale, exclude, list(mask))
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_torch_compile_fullgraph(gen):
    def f(z0, z1, q, k, s):
        return (
            ssl_fast.nt_xent(z0, z1, 0.2)
            + ssl_fast.info_nce(q, k, 0.1, symmetric=True)
            + ssl_fast.info_nce(q, k, logit_scale=s, reduction="sum")
        )

    inputs = [*views(6, 5, gen, torch.float32), *views(4, 5, gen, torch.float32),
              torch.tensor(2.5, requires_grad=True)]
    compiled = torch.compile(f, fullgraph=True)
    eager, eager_grads = value_and_grads(f, *inputs)
    comp, comp_grads = value_and_grads(compiled, *inputs)
    torch.testing.assert_close(comp, eager)
    torch.testing.assert_close(comp_grads, eager_grads)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_torch_compile_non_contiguous_input(gen):
    """Inductor checks every op output against the fake kernel's strides: the gradients of a
    transposed query must be declared contiguous, as the kernels return them."""
    qt, k = randn(5, 7, gen=gen).requires_grad_(), randn(7, 5, gen=gen).requires_grad_()

    def f(qt, k):
        return ssl_fast.info_nce(qt.T, k, 0.3, symmetric=True)

    eager, eager_grads = value_and_grads(f, qt, k)
    comp, comp_grads = value_and_grads(torch.compile(f, fullgraph=True), qt, k)
    torch.testing.assert_close(comp, eager)
    torch.testing.assert_close(comp_grads, eager_grads)


def test_torch_backend_matches_kernel(monkeypatch, gen):
    z0, z1 = views(40, 6, gen, torch.float32)
    kernel = value_and_grads(ssl_fast.nt_xent, z0, z1)
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    fallback = value_and_grads(ssl_fast.nt_xent, z0, z1)
    torch.testing.assert_close(kernel, fallback)


# ----------------------------------------------------------------- errors


def test_bad_arguments(gen):
    z = randn(4, 3, gen=gen, dtype=torch.float32)
    cases = [
        (lambda: ssl_fast.nt_xent(z, z[:3]), ValueError, "same shape, got \\(4, 3\\) and \\(3, 3\\)"),
        (lambda: ssl_fast.nt_xent(z[0], z[0]), ValueError, "2-D \\[batch, features\\], got shape \\(3,\\)"),
        (lambda: ssl_fast.nt_xent(z[None], z[None]), ValueError, "got shape \\(1, 4, 3\\)"),
        (lambda: ssl_fast.nt_xent(z, z, temperature=0.0), ValueError, "temperature must be > 0 and finite"),
        (lambda: ssl_fast.nt_xent(z, z, temperature=-1), ValueError, "temperature must be > 0 and finite"),
        (lambda: ssl_fast.nt_xent(z.long(), z.long()), TypeError, "got dtype torch.int64"),
        (lambda: ssl_fast.nt_xent(z[:0], z[:0]), ValueError, "empty batch"),
        (lambda: ssl_fast.nt_xent(z, z.to("meta")), ValueError, "z1 is on meta but z0 is on cpu"),
        (lambda: ssl_fast.nt_xent(z, z, reduction="avg"), ValueError, "reduction must be"),
        (lambda: ssl_fast.info_nce(z, z[:, :2]), ValueError, "query has 3 features but key has 2"),
        (lambda: ssl_fast.info_nce(z, z[:2]), ValueError, "key needs at least 4 rows, got 2"),
        (lambda: ssl_fast.info_nce(z, z, labels=torch.tensor([0, 1, 2, 4])), ValueError, "must lie in"),
        (lambda: ssl_fast.info_nce(z, z, labels=torch.zeros(4)), ValueError, "int64 tensor of shape \\[4\\]"),
        (lambda: ssl_fast.info_nce(z, z, logit_scale=torch.ones(2)), TypeError, "one-element tensor"),
        (lambda: ssl_fast.NTXentLoss(temperature=0), ValueError, "temperature must be > 0 and finite"),
        (lambda: ssl_fast.NTXentLoss(memory_bank_size=(4, 3, 2)), ValueError, "memory_bank_size must be"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_raw_op_errors(gen):
    q = randn(4, 3, gen=gen, dtype=torch.float32)
    s = torch.tensor(2.0)
    cases = [
        ((q.int(), None, s, None, False), "q must be float16, bfloat16, float32 or float64"),
        ((q, q[:, :2], s, None, False), "q has 3 features but k has 2"),
        ((q, None, torch.tensor(0.0), None, False), "scale \\(1 / temperature\\) must be positive"),
        ((q, None, torch.ones(2), None, False), "scale must be a 0-dim"),
        ((q, q, s, torch.tensor([0, 1, 2, 4]), False), "exclude\\[3\\] = 4 is outside \\[-1, 4\\)"),
        ((q, None, s, torch.zeros(4, dtype=torch.long), False), "exclude is implied"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            ops.contrastive_lse(*args)


# ----------------------------------------------------------------- non-finite inputs
# A NaN or inf in an embedding makes NaN every loss and gradient that reads it, as in the
# materialised formula: in every row whose sums take the poisoned row or column, in every
# reduction, on every path (self, cross with extra keys, symmetric, memory bank).


def assert_same_nan(ours, theirs, what: str) -> None:
    """NaN exactly where the formula has NaN, and close elsewhere."""
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert torch.equal(a.isnan(), b.isnan()), f"{what} {k}: NaN at {a.isnan().nonzero().tolist()}, " \
            f"expected at {b.isnan().nonzero().tolist()}"
        torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m, k=k: f"{what} {k}: {m}")


def poisoned(x: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    x = x.detach().clone()
    x[index] = value
    return x.requires_grad_()


def check_nan(ours_fn, ref_fn, inputs, what: str) -> None:
    out, grads = value_and_grads(ours_fn, *inputs)
    ref, ref_grads = value_and_grads(ref_fn, *inputs)
    assert out.isnan().any(), f"{what}: no NaN came out"
    assert_same_nan([out, *grads], [ref, *ref_grads], what)


NON_FINITE = [float("nan"), float("inf")]


def test_non_finite_poisons_the_uninvolved_side_too(gen):
    """The reported case: one NaN in z0 gave -inf in the rows that only see it as a column."""
    z0, z1 = views(3, 4, gen, torch.float32)
    out = ssl_fast.nt_xent(poisoned(z0, (0, 0), float("nan")), z1, 0.5, "none")
    assert out.isnan().all(), out


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_non_finite_nt_xent(dtype, reduction, value, device, gen):
    z0, z1 = views(300, 8, gen, dtype, requires_grad=False)
    z0 = poisoned(z0.to(device), (5, 3), value)
    check_nan(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.5, reduction),
        lambda a, b: reference.nt_xent(a.double(), b.double(), 0.5, reduction).to(dtype),
        (z0, z1.to(device).requires_grad_()),
        f"nt_xent {reduction}",
    )


# Where the non-finite value sits: a query, the positive key of a query, an extra key
# beyond the M positives (a queue of negatives).
NON_FINITE_INFO_NCE = {"query": (0, (2, 1)), "positive key": (1, (2, 1)), "extra key": (1, (600, 1))}


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("where", NON_FINITE_INFO_NCE, ids=str)
def test_non_finite_info_nce(where, symmetric, reduction, value, device, gen):
    side, index = NON_FINITE_INFO_NCE[where]
    inputs = [randn(300, 8, gen=gen, device=device), randn(700, 8, gen=gen, device=device)]
    inputs = [poisoned(x, index, value) if k == side else x.requires_grad_() for k, x in enumerate(inputs)]
    check_nan(
        lambda q, c: ssl_fast.info_nce(q, c, 0.1, symmetric=symmetric, reduction=reduction),
        lambda q, c: reference.info_nce(q, c, 0.1, symmetric=symmetric, reduction=reduction),
        inputs,
        f"info_nce {where}",
    )


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_non_finite_in_memory_bank(value, gen):
    """A NaN that reached the bank: the next losses are NaN, not a finite value with NaN
    gradients."""
    torch.manual_seed(0)
    loss_fn = ssl_fast.NTXentLoss(0.2, memory_bank_size=(16, 4))
    out0, out1 = views(4, 4, gen, torch.float32)
    loss_fn(out0, poisoned(out1, (1, 2), value))
    bank = loss_fn.bank.clone()
    assert not bank.isfinite().all()
    out0, out1 = views(4, 4, gen, torch.float32)
    check_nan(loss_fn, lambda a, b: _memory_bank_reference(a, b, bank, 0.2), (out0, out1), "memory bank")


# ----------------------------------------------------------------- NTXentLoss


def test_module_is_nt_xent(gen):
    z0, z1 = views(9, 4, gen, torch.float32)
    torch.testing.assert_close(ssl_fast.NTXentLoss(0.3)(z0, z1), ssl_fast.nt_xent(z0, z1, 0.3))


def _memory_bank_reference(out0, out1, bank, temperature):
    """MoCo-style NT-Xent: out0 against its positive out1 and the bank's negatives."""
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    logits = torch.cat([(out0 * out1).sum(1, keepdim=True), out0 @ bank.T], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(out0), dtype=torch.long))


def test_memory_bank_fifo(gen):
    torch.manual_seed(0)
    loss_fn = ssl_fast.NTXentLoss(0.2, memory_bank_size=(10, 3))
    bank = loss_fn.bank.clone()
    assert torch.allclose(bank.norm(dim=1), torch.ones(10))
    batches = [views(4, 3, gen, torch.float32) for _ in range(4)]
    pointer = 0
    for out0, out1 in batches:
        loss, grads = value_and_grads(loss_fn, out0, out1)
        ref, ref_grads = value_and_grads(lambda a, b: _memory_bank_reference(a, b, bank, 0.2), out0, out1)
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(grads, ref_grads)
        # The bank then takes this batch's normalised out1, wrapping by dropping the remainder.
        taken = min(4, 10 - pointer)
        bank[pointer : pointer + taken] = F.normalize(out1.detach(), dim=1)[:taken]
        pointer = 0 if pointer + 4 >= 10 else pointer + 4
        torch.testing.assert_close(loss_fn.bank, bank)
        assert int(loss_fn.bank_ptr) == pointer
    # No update when out0 needs no gradient (evaluation).
    with torch.no_grad():
        loss_fn(*(x.detach() for x in batches[0]))
    torch.testing.assert_close(loss_fn.bank, bank)


def test_memory_bank_lazy_dimension(gen):
    loss_fn = ssl_fast.NTXentLoss(memory_bank_size=16)
    out0, out1 = views(4, 5, gen, torch.float32)
    loss_fn(out0, out1)
    assert loss_fn.bank.shape == (16, 5)


def _lightly_ntxent():
    """lightly's NTXentLoss class (see ssl_fast.bench.peers); the test skips without lightly."""
    try:
        return lightly_loss("ntx_ent_loss", "NTXentLoss")
    except ImportError:
        pytest.skip("lightly is not installed")


@pytest.mark.parametrize("bank", [0, (64, 8)], ids=["simclr", "memory-bank"])
def test_matches_lightly(bank, gen):
    LightlyNTXent = _lightly_ntxent()
    torch.manual_seed(3)
    theirs = LightlyNTXent(temperature=0.3, memory_bank_size=bank)
    torch.manual_seed(3)
    ours = ssl_fast.NTXentLoss(temperature=0.3, memory_bank_size=bank)
    for step in range(3):
        out0, out1 = views(24, 8, gen, torch.float32)
        loss, grads = value_and_grads(ours, out0, out1)
        their_loss, their_grads = value_and_grads(theirs, out0, out1)
        torch.testing.assert_close(loss, their_loss, msg=lambda m, s=step: f"step {s}: {m}")
        torch.testing.assert_close(grads, their_grads)


# ----------------------------------------------------------------- what lightly's users rely on


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_single_pair_loss_is_exactly_zero(dtype, backend, monkeypatch, gen):
    """With one pair, each row's only other row is its positive: the loss is a cross-entropy
    over one logit, 0 exactly, and so are its gradients (lightly's value, bit for bit)."""
    monkeypatch.setenv("SSL_FAST_BACKEND", backend)
    for d in (1, 2, 64):
        for temperature in (0.07, 1.0, 7.0):
            z0, z1 = views(1, d, gen, dtype)
            for reduction in REDUCTIONS:
                loss, grads = value_and_grads(
                    functools.partial(ssl_fast.nt_xent, temperature=temperature, reduction=reduction), z0, z1
                )
                assert loss.dtype == dtype and not loss.any(), (d, temperature, reduction, loss)
                assert not any(g.any() for g in grads), (d, temperature, reduction)


def test_single_pair_matches_lightly_bitwise(gen):
    LightlyNTXent = _lightly_ntxent()
    for d in (1, 2, 16, 64):
        for temperature in (0.1, 1.0, 10.0):
            z0, z1 = views(1, d, gen, torch.float32, requires_grad=False)
            ours = ssl_fast.NTXentLoss(temperature)(z0, z1)
            assert torch.equal(ours, LightlyNTXent(temperature)(z0, z1)), (d, temperature)


def last_element_differs(z: torch.Tensor) -> torch.Tensor:
    other = z.detach().clone()
    other.view(-1)[-1] += 1
    return other.requires_grad_(z.requires_grad)


# Sizes around the tile (256 rows of cat(z0, z1)), where a row's neighbours sit in other tiles.
SWAP_SIZES = [(1, 3), (2, 1), (19, 32), (128, 8), (129, 16), (300, 33)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("n,d", SWAP_SIZES, ids=str)
def test_swapping_the_views_gives_the_same_bits(n, d, dtype, gen):
    """NT-Xent is symmetric in its two views; the loss, its rows and the gradients of
    nt_xent(z1, z0) are those of nt_xent(z0, z1), to the bit (lightly's test allows 1e-12),
    also for views that differ only in their last element. Two equal views cannot be told
    apart: each may get either set of (equal up to rounding) row losses and gradients."""
    z0, z1 = views(n, d, gen, dtype)
    same = z0.detach().clone().requires_grad_()
    for first, second in ((z0, z1), (z0, last_element_differs(z0)), (z0, same)):
        for reduction in REDUCTIONS:
            loss = functools.partial(ssl_fast.nt_xent, temperature=0.3, reduction=reduction)
            value, (g0, g1) = value_and_grads(loss, first, second)
            swapped, (h1, h0) = value_and_grads(loss, second, first)
            if reduction == "none":  # rows of the first argument first
                swapped = swapped.roll(n)
            if second is not same:
                assert torch.equal(value, swapped), (reduction, value, swapped)
                assert torch.equal(g0, h0) and torch.equal(g1, h1), reduction
            elif reduction != "none":
                assert torch.equal(value, swapped), (reduction, value, swapped)


def test_module_swap_symmetry_as_lightly_tests_it():
    """lightly's own check, batch sizes 1 to 19 of 32-d and 1-d embeddings, held to the bit."""
    gen = torch.Generator().manual_seed(0)
    loss = ssl_fast.NTXentLoss()
    for d in (32, 1):
        for n in range(1, 20):
            a, b = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
            assert torch.equal(loss(a, b), loss(b, a)), (n, d)


def test_gather_distributed_needs_torch_distributed(monkeypatch, gen):
    """As lightly: asking to gather on a torch built without torch.distributed is an error
    when the loss is made (and when the functions are called), not a silent single process."""
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    z = randn(4, 3, gen=gen, dtype=torch.float32)
    lacks = "gather_distributed=True needs torch.distributed, which this build of torch lacks"
    calls = {
        "NTXentLoss": lambda: ssl_fast.NTXentLoss(gather_distributed=True),
        "InfoNCELoss": lambda: ssl_fast.InfoNCELoss(gather_distributed=True),
        "nt_xent": lambda: ssl_fast.nt_xent(z, z, gather_distributed=True),
        "info_nce": lambda: ssl_fast.info_nce(z, z, gather_distributed=True),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"^{name}: {lacks} "):
            call()
    ssl_fast.NTXentLoss()(z, z)  # no gathering asked, no question
    try:
        LightlyNTXent = _lightly_ntxent()
    except pytest.skip.Exception:
        return
    with pytest.raises(ValueError):
        LightlyNTXent(gather_distributed=True)


def test_memory_bank_loss_far_below_the_logits(gen):
    """A positive at cosine 1 and every negative of the bank at -1: the loss, about
    K exp(-2 / t) = 1.6e-8, lies far below the rounding of logits of 1 / t = 10 in float32,
    and keeps float32's relative precision (against the float64 formula) all the same."""
    t, bank_size = 0.1, 8
    out0 = randn(6, 4, gen=gen, dtype=torch.float32)[:1].expand(6, 4).clone().requires_grad_()
    out1 = 3 * out0.detach()
    loss_fn = ssl_fast.NTXentLoss(t, memory_bank_size=(bank_size, 4))
    loss_fn.bank = -F.normalize(out0.detach()[:1], dim=1).expand(bank_size, 4).clone()
    expected = _memory_bank_reference(out0.detach().double(), out1.double(), loss_fn.bank.double(), t)
    assert 1e-8 < expected.item() < 1e-7
    loss = loss_fn(out0, out1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


# ----------------------------------------------------------------- CUDA kernels
# Skipped without a GPU; `pytest tests -k cuda` selects them. Every test that takes the
# cuda_kernel fixture runs once per CUDA implementation (SSL_FAST_CONTRASTIVE_KERNEL):
# "tiled" (stage 1, cuBLAS strips) and "fused" (tensor-core tiles, which serve 16-bit
# inputs, and fp32 ones only while TF32 is allowed: other calls fall back to stage 1).
# SSL_FAST_BACKEND=ext makes a missing CUDA kernel an error instead of a fallback to the
# reference. STRIPS forces stage 1's strip height (rows of logits per GEMM) down to 7
# rows, so that these small sizes span several strips; None keeps the default (one strip
# at these sizes).

CUDA_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
STRIPS = [None, 7]
KERNELS = ["tiled", "fused"]


class CudaKernel:
    """The CUDA implementation under test; calling it sets stage 1's strip height (None:
    the default; a string: passed as is, for the error tests)."""

    def __init__(self, name: str, monkeypatch: pytest.MonkeyPatch):
        self.name = name
        self._monkeypatch = monkeypatch
        monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
        monkeypatch.setenv("SSL_FAST_CONTRASTIVE_KERNEL", name)

    @property
    def dtype(self) -> torch.dtype:
        """An input dtype this implementation serves itself (fp32 would fall back to stage 1
        in the fused one)."""
        return torch.bfloat16 if self.name == "fused" else torch.float32

    def __call__(self, rows: int | str | None) -> None:
        if rows is None:
            self._monkeypatch.delenv("SSL_FAST_CONTRASTIVE_STRIP_ROWS", raising=False)
        else:
            self._monkeypatch.setenv("SSL_FAST_CONTRASTIVE_STRIP_ROWS", str(rows))

    def use(self, name: str) -> None:
        """Switches the implementation, for tests that compare them."""
        self._monkeypatch.setenv("SSL_FAST_CONTRASTIVE_KERNEL", name)


@pytest.fixture(params=KERNELS)
def cuda_kernel(request, monkeypatch) -> CudaKernel:
    return CudaKernel(request.param, monkeypatch)


# Pins a test to one implementation: @only("fused").
def only(name: str):
    return pytest.mark.parametrize("cuda_kernel", [name], indirect=True)


def cuda_randn(*shape: int, gen, dtype=torch.float32, requires_grad=True) -> torch.Tensor:
    return randn(*shape, gen=gen, dtype=dtype, device="cuda").requires_grad_(requires_grad)


@requires_cuda
@pytest.mark.parametrize("strip", STRIPS, ids=str)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("n,d", SIZES, ids=str)
def test_cuda_nt_xent_matches_formula(n, d, dtype, strip, gen, cuda_kernel):
    cuda_kernel(strip)
    z0, z1 = cuda_randn(n, d, gen=gen, dtype=dtype), cuda_randn(n, d, gen=gen, dtype=dtype)
    weight = torch.rand(2 * n, generator=gen).cuda()
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.5, "none"),
        lambda a, b: reference.nt_xent(a, b, 0.5, "none"),
        (z0, z1),
        f"cuda nt_xent {n}x{d} {dtype} strip={strip}",
        weight=weight,
    )


@requires_cuda
@pytest.mark.parametrize("strip", STRIPS, ids=str)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("case", INFO_NCE_CASES, ids=str)
def test_cuda_info_nce_matches_formula(case, symmetric, dtype, strip, gen, cuda_kernel):
    cuda_kernel(strip)
    m, k, with_labels = INFO_NCE_CASES[case].values()
    query, key = cuda_randn(m, 24, gen=gen, dtype=dtype), cuda_randn(k, 24, gen=gen, dtype=dtype)
    labels = torch.randint(0, k, (m,), generator=gen).cuda() if with_labels else None
    check_against_reference(
        lambda q, c: ssl_fast.info_nce(q, c, 0.1, labels, symmetric, reduction="none"),
        lambda q, c: reference.info_nce(q, c, 0.1, labels, symmetric, reduction="none"),
        (query, key),
        f"cuda info_nce {case} symmetric={symmetric} {dtype} strip={strip}",
        scale=10.0,
    )


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_low_temperature_in_16_bit(dtype, gen, cuda_kernel):
    cuda_kernel(7)
    z0, z1 = cuda_randn(200, 16, gen=gen, dtype=dtype), cuda_randn(200, 16, gen=gen, dtype=dtype)
    loss, grads = value_and_grads(lambda a, b: ssl_fast.nt_xent(a, b, 0.01), z0, z1)
    assert torch.isfinite(loss).all() and all(torch.isfinite(g).all() for g in grads)
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.01), lambda a, b: reference.nt_xent(a, b, 0.01), (z0, z1),
        f"cuda t=0.01 {dtype}", scale=100.0,
    )
    check_against_reference(
        lambda q, c: ssl_fast.info_nce(q, c, 0.01, symmetric=True),
        lambda q, c: reference.info_nce(q, c, 0.01, symmetric=True),
        (z0, z1), f"cuda info_nce t=0.01 {dtype}", scale=100.0,
    )


@requires_cuda
@pytest.mark.parametrize("strip", STRIPS, ids=str)
def test_cuda_op_cross_mode(strip, gen, cuda_kernel):
    """InfoNCE's form of the op: exclude (with rows excluding nothing), col_lse and a scale
    that receives a gradient, every output weighted, against the float64 formula."""
    cuda_kernel(strip)
    q, k = cuda_randn(300, 24, gen=gen), cuda_randn(270, 24, gen=gen)
    exclude = torch.randint(-1, 270, (300,), generator=gen).cuda()
    scale = torch.tensor(7.0, device="cuda", requires_grad=True)
    weights = [torch.randn(shape, generator=gen).cuda() for shape in ((300, 24), (270, 24), (300,), (270,))]

    def total(fn):
        def weighted(a, b, s):
            return sum((o * w).sum() for o, w in zip(fn(a, b, s, exclude, True), weights, strict=True))

        return weighted

    check_against_reference(
        total(ops.contrastive_lse), total(reference.contrastive_lse), (q, k, scale), f"cuda op strip={strip}",
        scale=7.0,
    )


# (q rows, k rows or None, exclude, col_lse): the self form, the cross form with exclude
# and column lse's, and a key that every query excludes (lse -inf, no gradient).
CUDA_CPU_CASES = {
    "self": (300, None, None, False),
    "cross": (300, 270, "random", True),
    "all-excluded": (5, 1, "zeros", True),
}


def _cpu_case_inputs(case: str, dtype: torch.dtype, gen, dim: int = 9):
    """(q, k, exclude, col_lse) of a CUDA_CPU_CASES case, on the CPU."""
    m, n, excl, col = CUDA_CPU_CASES[case]
    q = randn(m, dim, gen=gen, dtype=dtype)
    k = None if n is None else randn(n, dim, gen=gen, dtype=dtype)
    exclude = {None: None, "random": torch.randint(-1, n or 1, (m,), generator=gen),
               "zeros": torch.zeros(m, dtype=torch.long)}[excl]
    return q, k, exclude, col


def _op_outputs(inputs, scale: torch.Tensor, device: str) -> list[torch.Tensor]:
    """The op's outputs and its backward's (seeded incoming gradients), moved to the CPU."""
    q, k, exclude, col = (t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)
    outs = ops.contrastive_lse(q, k, scale, exclude, col)
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(o.shape, generator=g, dtype=o.dtype).to(device) if o.numel() else None for o in outs]
    mask = [True, k is not None, True]
    back = ops.contrastive_lse_backward(*grads, q, k, *outs, scale, exclude, mask)
    return [t.cpu() for t in (*outs, *back)]


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CUDA_CPU_CASES, ids=str)
def test_cuda_matches_cpu_kernel(case, dtype, gen, cuda_kernel):
    cuda_kernel(7)
    inputs = _cpu_case_inputs(case, dtype, gen)
    scale = torch.tensor(5.0, dtype=torch.float64)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else {}
    ours = _op_outputs(inputs, scale, "cuda")
    for got, cpu in zip(ours, _op_outputs(inputs, scale, "cpu"), strict=True):
        torch.testing.assert_close(got, cpu, **tol)
    if case == "all-excluded":
        row, col_lse, dscale = ours[2], ours[3], ours[6]
        assert torch.equal(row, torch.full_like(row, -math.inf)) and torch.equal(col_lse, row[:1])
        assert dscale.item() == 0


@requires_cuda
@only("tiled")
@pytest.mark.parametrize("strip", [1, 64, 299, 300, 1000], ids=str)
def test_cuda_symmetric_strips(strip, gen, cuda_kernel):
    """Without k, a stage-1 strip computes its columns from its own first row on and leaves
    the rows after it their part as columns: every strip height (one row, a ragged last
    strip, one strip) gives the CPU kernel's outputs and gradients, d scale included."""
    cuda_kernel(strip)
    inputs = _cpu_case_inputs("self", torch.float64, gen)
    scale = torch.tensor(5.0, dtype=torch.float64)
    for got, cpu in zip(_op_outputs(inputs, scale, "cuda"), _op_outputs(inputs, scale, "cpu"), strict=True):
        torch.testing.assert_close(got, cpu)


@requires_cuda
def test_cuda_repeatable(gen, cuda_kernel):
    """Two runs are bitwise equal: no atomics, every sum in a fixed order."""
    cuda_kernel(7)
    z0, z1 = (cuda_randn(700, 40, gen=gen, dtype=cuda_kernel.dtype) for _ in range(2))
    runs = [
        (value_and_grads(lambda a, b: ssl_fast.nt_xent(a, b, 0.1), z0, z1),
         value_and_grads(lambda a, b: ssl_fast.info_nce(a, b, 0.1, symmetric=True), z0, z1))
        for _ in range(2)
    ]
    for (loss, grads), (loss0, grads0) in zip(runs[1], runs[0], strict=True):
        assert torch.equal(loss, loss0)
        assert all(torch.equal(g, g0) for g, g0 in zip(grads, grads0, strict=True))


@requires_cuda
def test_cuda_non_contiguous_and_no_grad_side(gen, cuda_kernel):
    cuda_kernel(None)
    z0 = randn(260, 20, gen=gen, dtype=cuda_kernel.dtype, device="cuda")[:, ::2]
    z1 = randn(10, 260, gen=gen, dtype=cuda_kernel.dtype, device="cuda").T.requires_grad_(True)
    check_against_reference(ssl_fast.nt_xent, reference.nt_xent, (z0, z1), "cuda strided")


@requires_cuda
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=str)
def test_cuda_opcheck(case, gen, cuda_kernel):
    cuda_kernel(2)
    (flags, mask) = OPCHECK_CASES[case]
    dtype = cuda_kernel.dtype
    q = cuda_randn(5, 3, gen=gen, dtype=dtype, requires_grad=mask[0])
    k = cuda_randn(4, 3, gen=gen, dtype=dtype, requires_grad=mask[1]) if flags["k"] else None
    scale = torch.tensor(2.0, device="cuda").requires_grad_(mask[2])
    exclude = torch.tensor([0, -1, 3, 1, 2], device="cuda") if flags["exclude"] else None
    torch.library.opcheck(ops.contrastive_lse, (q, k, scale, exclude, flags["col"]))
    q, k, scale = (None if t is None else t.detach() for t in (q, k, scale))
    qn, kn, row, col = ops.contrastive_lse(q, k, scale, exclude, flags["col"])
    grads = (torch.randn_like(qn), torch.randn_like(kn) if k is not None else None, torch.randn_like(row),
             torch.randn_like(col) if flags["col"] else None)
    torch.library.opcheck(
        ops.contrastive_lse_backward, (*grads, q, k, qn, kn, row, col, scale, exclude, list(mask))
    )


def _compile_case(gen, dtype, learned_scale=True):
    """A function of NT-Xent and InfoNCE and its CUDA inputs; learned_scale adds an InfoNCE
    term with a logit_scale tensor (read on the host by the op: no CUDA graph can hold it)."""

    def f(z0, z1, q, k, s):
        loss = ssl_fast.nt_xent(z0, z1, 0.2) + ssl_fast.info_nce(q, k, 0.1, symmetric=True)
        return loss + ssl_fast.info_nce(q, k, logit_scale=s, reduction="sum") if learned_scale else loss

    inputs = [cuda_randn(6, 5, gen=gen, dtype=dtype), cuda_randn(6, 5, gen=gen, dtype=dtype),
              cuda_randn(4, 5, gen=gen, dtype=dtype), cuda_randn(4, 5, gen=gen, dtype=dtype),
              torch.tensor(2.5, device="cuda", requires_grad=learned_scale)]
    return f, inputs


@requires_cuda
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_cuda_torch_compile_fullgraph(gen, cuda_kernel):
    cuda_kernel(None)
    f, inputs = _compile_case(gen, cuda_kernel.dtype)
    compiled = torch.compile(f, fullgraph=True)
    eager, eager_grads = value_and_grads(f, *inputs)
    comp, comp_grads = value_and_grads(compiled, *inputs)
    torch.testing.assert_close(comp, eager)
    torch.testing.assert_close(comp_grads, eager_grads)


@requires_cuda
@only("fused")  # one more compilation per kernel would strain gpu_check.sh's time limit
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_cuda_torch_compile_reduce_overhead(gen, cuda_kernel):
    """CUDA graphs: the kernels allocate through torch and launch on the current stream,
    so recording and replays give the eager results."""
    from torch._dynamo.utils import counters

    cuda_kernel(None)
    f, inputs = _compile_case(gen, cuda_kernel.dtype, learned_scale=False)
    counters.clear()
    compiled = torch.compile(f, mode="reduce-overhead")
    eager, eager_grads = value_and_grads(f, *inputs)
    for _ in range(3):  # warm-up, recording, replay
        comp, comp_grads = value_and_grads(compiled, *inputs)
        torch.testing.assert_close(comp, eager)
        torch.testing.assert_close(comp_grads, eager_grads)
    # Else Inductor ran the graphs without CUDA graphs, and the test checked nothing more
    # than the fullgraph one.
    assert counters["inductor"]["cudagraph_skips"] == 0


@requires_cuda
def test_cuda_side_stream(gen, cuda_kernel):
    """Inputs made on a side stream and consumed there: a kernel launched on another
    stream would race with their producer (pool streams do not wait for the default one)."""
    cuda_kernel(64)
    x0, x1 = (cuda_randn(2048, 128, gen=gen, dtype=cuda_kernel.dtype, requires_grad=False) for _ in range(2))
    expected = value_and_grads(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.1), (x0 * 2).requires_grad_(), (x1 * 2).requires_grad_()
    )
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        z0, z1 = (x0 * 2).requires_grad_(), (x1 * 2).requires_grad_()
        got = value_and_grads(lambda a, b: ssl_fast.nt_xent(a, b, 0.1), z0, z1)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got, expected)


@requires_cuda
@only("tiled")
def test_cuda_strip_rows_must_be_positive(gen, cuda_kernel):
    q = cuda_randn(4, 3, gen=gen, requires_grad=False)
    for bad in ("0", "-3", "7x"):
        cuda_kernel(bad)
        with pytest.raises(RuntimeError, match="SSL_FAST_CONTRASTIVE_STRIP_ROWS must be a positive integer"):
            ops.contrastive_lse(q, None, torch.tensor(2.0), None, False)


@requires_cuda
@only("tiled")
def test_cuda_kernel_switch_must_be_known(gen, cuda_kernel):
    q = cuda_randn(4, 3, gen=gen, requires_grad=False)
    for bad in ("Fused", "cublas", " tiled"):
        cuda_kernel.use(bad)
        with pytest.raises(RuntimeError, match="SSL_FAST_CONTRASTIVE_KERNEL must be auto, fused or tiled"):
            ops.contrastive_lse(q, None, torch.tensor(2.0), None, False)


@requires_cuda
@only("tiled")
def test_cuda_auto_is_stage_1_until_stage_2_is_verified(gen, cuda_kernel):
    q = cuda_randn(70, 16, gen=gen, dtype=torch.bfloat16, requires_grad=False)
    results = []
    for name in ("tiled", "auto"):
        cuda_kernel.use(name)
        results.append(ops.contrastive_lse(q, None, torch.tensor(2.0), None, False))
    for tiled, auto in zip(*results, strict=True):
        assert torch.equal(tiled, auto)


# Row counts around the fused kernels' 64-row tiles, feature counts around their padded
# widths (64, 128, 256: zeros fill the rest).
ODD_ROWS = [1, 3, 63, 65, 130, 300]
ODD_DIMS = [1, 3, 33, 100, 128, 256]


@requires_cuda
@only("fused")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", ODD_DIMS, ids=str)
@pytest.mark.parametrize("n", ODD_ROWS, ids=str)
def test_cuda_fused_odd_sizes(n, d, dtype, gen, cuda_kernel):
    z0, z1 = (cuda_randn(n, d, gen=gen, dtype=dtype) for _ in range(2))
    check_against_reference(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.5, "none"),
        lambda a, b: reference.nt_xent(a, b, 0.5, "none"),
        (z0, z1),
        f"fused nt_xent {n}x{d} {dtype}",
        weight=torch.rand(2 * n, generator=gen).cuda(),
    )
    # The cross form with as many keys plus two, so that rows and columns differ.
    key = cuda_randn(n + 2, d, gen=gen, dtype=dtype)
    labels = torch.randint(0, n + 2, (n,), generator=gen).cuda()
    check_against_reference(
        lambda q, c: ssl_fast.info_nce(q, c, 0.1, labels, symmetric=True, reduction="none"),
        lambda q, c: reference.info_nce(q, c, 0.1, labels, symmetric=True, reduction="none"),
        (z0, key),
        f"fused info_nce {n}x{d} {dtype}",
        scale=10.0,
    )


@requires_cuda
@only("fused")
@pytest.mark.parametrize("case", CUDA_CPU_CASES, ids=str)
def test_cuda_fused_matches_tiled_and_cpu(case, gen, cuda_kernel):
    """bf16 inputs, every output of the op and of its backward: both CUDA stages round the
    unit rows (and the gradient) to bf16 for the tensor cores, where the CPU multiplies in
    fp32; so they agree with it to bf16's precision on the logits."""
    scale = torch.tensor(5.0, dtype=torch.float64)
    inputs = _cpu_case_inputs(case, torch.bfloat16, gen, dim=40)
    fused = _op_outputs(inputs, scale, "cuda")
    cuda_kernel.use("tiled")
    tiled = _op_outputs(inputs, scale, "cuda")
    cpu = _op_outputs(inputs, scale, "cpu")
    names = ["qn", "kn", "row_lse", "col_lse", "dq", "dk", "dscale"]
    for name, got_fused, got_tiled, want in zip(names, fused, tiled, cpu, strict=True):
        if name in ("qn", "kn"):  # one normalisation kernel serves both stages, in fp32
            assert torch.equal(got_fused, got_tiled), name
            torch.testing.assert_close(got_tiled, want, rtol=1e-4, atol=1e-5)
            continue
        finite = torch.isfinite(want)
        bound = 2.0**-6 * (want[finite].abs().max().item() if finite.any() else 0.0)
        for stage, got in (("fused", got_fused), ("tiled", got_tiled)):
            assert torch.equal(finite, torch.isfinite(got)), f"{stage} {name}"
            torch.testing.assert_close(
                got, want, rtol=0, atol=bound, msg=lambda m, n=f"{stage} {name}": f"{n}: {m}"
            )
    if case != "all-excluded":
        assert not torch.equal(fused[2], tiled[2]), "the fused kernels did not run"


@requires_cuda
@only("fused")
def test_cuda_fused_falls_back_to_tiled(gen, cuda_kernel):
    """Calls the fused kernels do not serve run stage 1 (bitwise its results): fp64, fp32
    while TF32 is not allowed, more than 256 features."""
    scale = torch.tensor(5.0, dtype=torch.float64)
    cases = [_cpu_case_inputs("cross", torch.float64, gen), _cpu_case_inputs("cross", torch.float32, gen),
             _cpu_case_inputs("self", torch.bfloat16, gen, dim=257)]
    assert torch.get_float32_matmul_precision() == "highest"
    for inputs in cases:
        cuda_kernel.use("fused")
        fused = _op_outputs(inputs, scale, "cuda")
        cuda_kernel.use("tiled")
        tiled = _op_outputs(inputs, scale, "cuda")
        assert all(torch.equal(a, b) for a, b in zip(fused, tiled, strict=True)), inputs[0].dtype


@requires_cuda
@only("fused")
@pytest.mark.parametrize("form", ["nt_xent", "info_nce"])
def test_cuda_fused_tf32(form, gen, cuda_kernel):
    """fp32 inputs while TF32 is allowed: tf32 tensor cores, accurate to tf32's 10-bit
    mantissa against the float64 formula."""
    z0, z1 = (cuda_randn(300, 33, gen=gen) for _ in range(2))
    fn = {"nt_xent": lambda a, b: ssl_fast.nt_xent(a, b, 0.5, "none"),
          "info_nce": lambda a, b: ssl_fast.info_nce(a, b, 0.5, symmetric=True, reduction="none")}[form]
    ref_fn = {"nt_xent": lambda a, b: reference.nt_xent(a, b, 0.5, "none"),
              "info_nce": lambda a, b: reference.info_nce(a, b, 0.5, symmetric=True, reduction="none")}[form]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        out, grads = value_and_grads(fn, z0, z1)
        cuda_kernel.use("tiled")
        tiled, _ = value_and_grads(fn, z0, z1)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert not torch.equal(out, tiled), "the fused kernels did not run"
    wide = [z.detach().double().requires_grad_() for z in (z0, z1)]
    ref, ref_grads = value_and_grads(ref_fn, *wide)
    # The loss is a difference of terms as large as the scale (2); gradients are relative.
    for k, (got, want) in enumerate(zip((out, *grads), (ref, *ref_grads), strict=True)):
        bound = 2.0**-8 * (max(want.abs().max().item(), 2.0) if k == 0 else 2 * want.abs().max().item())
        torch.testing.assert_close(got.double(), want, rtol=0, atol=bound)
