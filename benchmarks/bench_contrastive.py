"""NT-Xent: ssl_fast's tiled, symmetric loss against the materialised formula (normalize,
the 2N x 2N logits, cross-entropy), both on z0, z1 of the case shape [N, D]."""

from __future__ import annotations

from benchmarks.harness import Case, OpBench

# The materialised formula holds several 2N x 2N fp32 matrices at once (about 3 GB at
# N = 8192 here, growing as N^2): above this it would not fit in 24 GB.
_MATERIALISED_MAX_N = 16384

# CPU: N = 8192, D = 128 is the headline; N = 32768 (`--bench-sizes 32768x128`) is for
# ssl_fast alone. The materialised rounds take seconds: 3 timed rounds per case.
CASES = {
    "cpu": (((1024, 128), "float32"), ((4096, 128), "float32"), ((8192, 128), "float32"),
            ((4096, 512), "float32")),
    "cuda": (((32768, 128), "bfloat16"), ((32768, 128), "float32")),
}


def _skip(case: Case) -> str | None:
    if case.provider == "torch" and case.shape[0] > _MATERIALISED_MAX_N:
        n = 2 * case.shape[0]
        return f"the materialised formula needs several {n}x{n} matrices ({n * n * 4 / 2**30:.0f} GiB each)"
    return None


BENCHES = [
    OpBench(
        "nt_xent",
        {"torch": "ssl_fast.reference:nt_xent", "ssl_fast": "ssl_fast:nt_xent"},
        CASES,
        n_inputs=2,
        n_grad_inputs=2,
        max_rounds=3,
        skip=_skip,
    ),
]


def test_contrastive(case, measure):
    measure(case)
