"""Bitwise repeatability: the same bits for 1, 2, 3 and 4 threads, forward and backward, on
every instruction set the CPU has.

How each family earns it: the contrastive tiles (NT-Xent, InfoNCE, SigLIP) multiply with
ssl_fast's own single-threaded GEMMs (csrc/contrastive/tile_gemm.h) in a schedule fixed by
the shape; the regression losses sum fixed 8192-element blocks in block order; the masking
draws every bit from Philox indexed by element. The final sums of the Python layer scan in
one order (ssl_fast.ops.reduction), where torch's sum would split them between threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randn

import ssl_fast
from ssl_fast import _ext
from ssl_fast.ops.reduction import reduce_rows, row_dot

THREADS = (1, 2, 3, 4)


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def outputs_and_grads(fn, inputs: list[torch.Tensor], weighted: bool = True) -> list[torch.Tensor]:
    """fn(*inputs) and the gradients of its sum, with fixed random weights unless not
    `weighted`, with respect to every input."""
    out = fn(*inputs)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    grads = torch.autograd.grad((out * weight if weighted else out).sum(), inputs)
    return [out.detach(), *grads]


def assert_same_bits_for_any_thread_count(
    fn, inputs: list[torch.Tensor], what: str, weighted: bool = True
) -> None:
    """fn's outputs and gradients on 1 to 4 threads, and on 1 again, all equal to the bit."""
    first = None
    for threads in (*THREADS, THREADS[0]):
        torch.set_num_threads(threads)
        results = outputs_and_grads(fn, inputs, weighted)
        if first is None:
            first = results
            continue
        for k, (a, b) in enumerate(zip(results, first, strict=True)):
            assert torch.equal(a, b), (
                f"{what}: {'output' if k == 0 else f'gradient {k - 1}'} on {threads} threads differs "
                f"from 1 thread by up to {(a.double() - b.double()).abs().max().item():.3g}"
            )


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().requires_grad_() for t in tensors]


# Rows around the 256-row tile: one tile (the rounds of the schedule hold a single tile,
# which the BLAS would have multithreaded), two blocks (a round of one off-diagonal
# tile), many blocks; features below, at and above a vector width.
NT_XENT_SIZES = [(1, 8), (100, 40), (129, 7), (700, 40), (1500, 128)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("n,d", NT_XENT_SIZES, ids=str)
def test_nt_xent(n, d, reduction, dtype, gen):
    z0, z1 = (randn(n, d, gen=gen, dtype=dtype) for _ in range(2))
    assert_same_bits_for_any_thread_count(
        lambda a, b: ssl_fast.nt_xent(a, b, 0.1, reduction), leaves(z0, z1), f"nt_xent {n}x{d} {dtype}"
    )


# Queries x keys: square, a queue of extra negatives, few queries against many keys (short
# row blocks), labels; the per-tile maxima of a low temperature (own shift) in one case.
INFO_NCE_CASES = {
    "square": dict(m=300, k=300, labels=False, temperature=0.1),
    "queue": dict(m=300, k=900, labels=False, temperature=0.1),
    "few queries": dict(m=64, k=2000, labels=False, temperature=0.1),
    "labels": dict(m=257, k=513, labels=True, temperature=0.1),
    "own shift": dict(m=300, k=700, labels=False, temperature=0.02),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("case", INFO_NCE_CASES, ids=str)
def test_info_nce(case, symmetric, dtype, gen):
    m, k, with_labels, temperature = INFO_NCE_CASES[case].values()
    query, key = randn(m, 48, gen=gen, dtype=dtype), randn(k, 48, gen=gen, dtype=dtype)
    labels = torch.randint(0, k, (m,), generator=gen) if with_labels else None
    assert_same_bits_for_any_thread_count(
        lambda q, c: ssl_fast.info_nce(q, c, temperature, labels, symmetric, reduction="none"),
        leaves(query, key),
        f"info_nce {case}",
    )


def test_excluded_pairs_and_scale_gradient(gen):
    """The op with an exclusion per row (the gathered NT-Xent's form) and d scale."""
    q, k = randn(300, 24, gen=gen, dtype=torch.float32), randn(600, 24, gen=gen, dtype=torch.float32)
    exclude = torch.randint(-1, 600, (300,), generator=gen)
    scale = torch.tensor(5.0, dtype=torch.float64)

    def rows(q, k, scale):
        _, _, row, col = torch.ops.ssl_fast.contrastive_lse(q, k, scale, exclude, True)
        return torch.cat([row, col])

    assert_same_bits_for_any_thread_count(rows, leaves(q, k, scale), "contrastive_lse with exclude")


# Batches around the 256-row tile; features below, at and above a vector width.
SIGLIP_SIZES = [(1, 8), (300, 40), (700, 33)]


@pytest.mark.parametrize("weighted", [True, False], ids=["backward-op", "forward-grads"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n,d", SIGLIP_SIZES, ids=str)
def test_siglip(n, d, dtype, weighted, gen):
    """Gradients from the backward op (a weighted loss) and from the forward's own pass."""
    img, txt = randn(n, d, gen=gen, dtype=dtype), randn(n, d, gen=gen, dtype=dtype)
    scale, bias = torch.tensor(3.0), torch.tensor(-2.0)
    assert_same_bits_for_any_thread_count(
        ssl_fast.siglip, leaves(img, txt, scale, bias), f"siglip {n}x{d} {dtype}", weighted
    )


def test_memory_bank(gen):
    def loss(out0, out1):
        torch.manual_seed(0)  # the bank's initial unit vectors
        return ssl_fast.NTXentLoss(0.2, memory_bank_size=(4096, 32))(out0, out1)

    out0, out1 = randn(64, 32, gen=gen, dtype=torch.float32), randn(64, 32, gen=gen, dtype=torch.float32)
    assert_same_bits_for_any_thread_count(loss, leaves(out0, out1), "NTXentLoss with a memory bank")


# SupCon: rows with labels, and views of samples; few classes (long class sums), many
# (most rows alone in theirs), rows around the 256-row tile.
SUP_CON_CASES = {"few classes": ((700,), 5), "many classes": ((300,), 250), "views": ((129, 3), 17)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("case", SUP_CON_CASES, ids=str)
def test_sup_con(case, reduction, dtype, gen):
    rows, classes = SUP_CON_CASES[case]
    z = randn(*rows, 40, gen=gen, dtype=dtype)
    labels = torch.randint(0, classes, rows[:1], generator=gen)
    assert_same_bits_for_any_thread_count(
        lambda x: ssl_fast.sup_con(x, labels, 0.1, reduction), leaves(z), f"sup_con {case} {dtype}"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("loss", ["DCLLoss", "DCLWLoss"])
@pytest.mark.parametrize("n,d", [(2, 8), (129, 7), (700, 40)], ids=str)
def test_dcl(n, d, loss, dtype, gen):
    z0, z1 = (randn(n, d, gen=gen, dtype=dtype) for _ in range(2))
    assert_same_bits_for_any_thread_count(getattr(ssl_fast, loss)(0.1), leaves(z0, z1), f"{loss} {n}x{d}")


@pytest.mark.parametrize("loss", ["smooth_l1_loss", "mse_loss"])
def test_regression_loss_with_fractional_mask(loss, gen):
    """A float mask over 60000 positions: its sum is a reduction the threads would split."""
    x, y = randn(300, 200, 3, gen=gen, dtype=torch.float32), randn(300, 200, 3, gen=gen, dtype=torch.float32)
    mask = torch.rand(300, 200, generator=gen)
    assert_same_bits_for_any_thread_count(
        lambda a, b: getattr(ssl_fast, loss)(a, b, mask=mask), leaves(x, y), f"{loss} with a float mask"
    )


def bce_inputs(gen, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    """Logits over many 8192-element blocks (split between threads), soft targets, and a
    per-class weight and pos_weight."""
    x = 3 * randn(97, 1031, gen=gen, dtype=dtype)
    y = torch.rand(97, 1031, generator=gen).to(dtype)
    w, pw = torch.rand(1031, generator=gen) + 0.5, torch.rand(1031, generator=gen) + 0.5
    return x, y, w, pw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropies(reduction, dtype, gen):
    x, y, w, pw = bce_inputs(gen, dtype)
    w, pw = (t.to(torch.float64 if dtype == torch.float64 else torch.float32) for t in (w, pw))
    assert_same_bits_for_any_thread_count(
        lambda a, b: ssl_fast.binary_cross_entropy_with_logits(a, b, w, reduction, pos_weight=pw),
        leaves(x, y),
        f"binary_cross_entropy_with_logits {reduction}",
    )
    assert_same_bits_for_any_thread_count(
        lambda a, b: ssl_fast.binary_cross_entropy(a, b, w, reduction),
        leaves(torch.sigmoid(x), y),
        f"binary_cross_entropy {reduction}",
    )


@pytest.mark.parametrize("shape", [(100_000,), (3, 40_000)], ids=str)
def test_fixed_order_sums(shape, gen):
    """Long sums, which torch's sum splits between threads."""
    x = randn(*shape, gen=gen, dtype=torch.float32)
    assert_same_bits_for_any_thread_count(
        lambda a: torch.stack([reduce_rows(a.reshape(-1), "mean", a.dtype), row_dot(a, a).sum()]),
        leaves(x),
        "reduce_rows and row_dot",
    )


# ----------------------------------------------------------------- instruction sets
# The tile GEMMs and the Philox lanes are compiled for AVX-512, AVX2 and the x86-64
# baseline, and the best the CPU has runs. SSL_FAST_CPU_ISA selects a lower one: each is
# checked here, in a process of its own, for accuracy and for its bits on any thread count.

ISAS = ["avx512", "avx2", "baseline"]
ISA_TESTS = [
    "tests/test_determinism.py::test_nt_xent",
    "tests/test_determinism.py::test_info_nce",
    "tests/test_determinism.py::test_binary_cross_entropies",
    "tests/test_contrastive.py::test_nt_xent_matches_formula",
    "tests/test_contrastive.py::test_info_nce_matches_formula",
    "tests/test_contrastive.py::test_nt_xent_temperatures",
    "tests/test_contrastive.py::test_gradcheck_nt_xent",
    "tests/test_contrastive_family.py::test_sup_con_matches_formula",
    "tests/test_contrastive_family.py::test_dcl_matches_formula",
    "tests/test_determinism.py::test_siglip",
    "tests/test_siglip.py::test_matches_formula",
    "tests/test_masking.py::test_vector_tails_match_reference",
    "tests/test_masking.py::test_same_bits_for_any_thread_count",
    "tests/test_regression.py::test_bce_large",
    "tests/test_regression.py::test_bce_edge_values_as_torch",
]


@pytest.mark.slow
@pytest.mark.skipif(not _ext.LOADED, reason="needs ssl_fast._C")
@pytest.mark.parametrize("isa", ISAS)
def test_each_instruction_set(isa):
    best = _ext.cpu_isa()
    if os.environ.get("SSL_FAST_CPU_ISA"):
        pytest.skip("SSL_FAST_CPU_ISA is set for the whole run")
    if isa == best:
        pytest.skip(f"{isa} is what every other test runs with")
    if ISAS.index(isa) < ISAS.index(best):
        pytest.skip(f"this CPU has no {isa}")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SSL_FAST_CPU_ISA": isa}
    check = subprocess.run(
        [sys.executable, "-c", "import ssl_fast._ext as e; print(e.cpu_isa())"],
        cwd=root, env=env, capture_output=True, text=True, check=True,
    )
    assert check.stdout.strip() == isa
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *ISA_TESTS],
        cwd=root, env=env, capture_output=True, text=True,
    )
    assert run.returncode == 0, f"with SSL_FAST_CPU_ISA={isa}:\n{run.stdout[-3000:]}{run.stderr[-2000:]}"


def isa_results(dtype) -> list[torch.Tensor]:
    """NT-Xent, symmetric InfoNCE (own shift) and SigLIP values and gradients on fixed inputs."""
    gen = torch.Generator().manual_seed(0)
    z0, z1, q = (randn(n, 40, gen=gen, dtype=dtype) for n in (300, 300, 100))
    k = randn(700, 40, gen=gen, dtype=dtype)
    return [
        *outputs_and_grads(lambda a, b: ssl_fast.nt_xent(a, b, 0.1, "none"), leaves(z0, z1)),
        *outputs_and_grads(
            lambda a, b: ssl_fast.info_nce(a, b, 0.02, symmetric=True, reduction="none"), leaves(q, k)
        ),
        *outputs_and_grads(ssl_fast.siglip, leaves(z0, z1, torch.tensor(3.0), torch.tensor(-2.0)), False),
    ]


@pytest.mark.skipif(not _ext.LOADED or _ext.cpu_isa() != "avx512", reason="needs a CPU with AVX-512")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_avx2_gives_the_bits_of_avx512(dtype, tmp_path):
    """The two block differently, but every logit is the same chain of fused multiply-adds:
    machines with either agree to the bit."""
    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys, torch; sys.path.insert(0, 'tests'); import test_determinism as t; "
        f"torch.save(t.isa_results(torch.{str(dtype).split('.')[1]}), sys.argv[1])"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "avx2.pt")],
        cwd=root, env={**os.environ, "SSL_FAST_CPU_ISA": "avx2"}, check=True,
    )
    theirs = torch.load(tmp_path / "avx2.pt")
    for k, (a, b) in enumerate(zip(isa_results(dtype), theirs, strict=True)):
        assert torch.equal(a, b), f"result {k}: AVX2 differs from AVX-512 by {(a - b).abs().max().item():.3g}"


@pytest.mark.skipif(not _ext.LOADED, reason="needs ssl_fast._C")
def test_unknown_instruction_set_is_an_error():
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", "import ssl_fast._ext as e; e.cpu_isa()"],
        cwd=root, env={**os.environ, "SSL_FAST_CPU_ISA": "sse9"}, capture_output=True, text=True,
    )
    assert "SSL_FAST_CPU_ISA must be avx512, avx2 or baseline, got 'sse9'" in run.stderr
