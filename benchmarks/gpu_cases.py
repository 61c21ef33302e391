"""One small call of every CUDA kernel of ssl_fast, forward and backward, checked.

The cases are what compute-sanitizer runs (memcheck, racecheck: benchmarks/gpu_check.sh) and
what the synchronisation check runs: each case is called once to warm up, then again under
torch.cuda.set_sync_debug_mode("error"), so that a host synchronisation inside the op or its
backward is reported by name. That second call runs on a side stream: a kernel launched on
another stream than the current one would race with its inputs. Results are compared with
the same call on the CPU, in float64 for the losses (relative error of the loss and of every
gradient, ||ours - ref|| / ||ref||) and bit for bit for the masking ops (their output is a
function of the seed alone).

    python -m benchmarks.gpu_cases                  # every case on CUDA, with the sync check
    python -m benchmarks.gpu_cases --device cpu     # the same calls on the CPU (a dry run)
    python -m benchmarks.gpu_cases --cases nt_xent --no-sync-check

Every contrastive case runs once per CUDA implementation (SSL_FAST_CONTRASTIVE_KERNEL=tiled,
fused) and once with stage 1 forced into strips of 64 rows, so that its column kernels run
at these small sizes. The exit status is 1 when a case is wrong, raises, or synchronises
without being listed as synchronising (KNOWN_SYNCS).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

import ssl_fast

# Relative error allowed against float64, per dtype: a sanity bound for a small case (the
# test suite holds the kernels to the dtype-aware criterion); bf16 operands of the logits
# round to 2^-9.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1.5e-2}

# Cases whose call synchronises by design, with the reason (README, CUDA notes).
KNOWN_SYNCS = {
    "mask_tokens_check_ids": "the range check of the ids reads its verdict on the host",
    "info_nce_logit_scale": "a CUDA logit_scale is read on the host by the op's checks",
}

KERNELS = {"tiled": {"SSL_FAST_CONTRASTIVE_KERNEL": "tiled"},
           "fused": {"SSL_FAST_CONTRASTIVE_KERNEL": "fused"},
           "strips": {"SSL_FAST_CONTRASTIVE_KERNEL": "tiled", "SSL_FAST_CONTRASTIVE_STRIP_ROWS": "64"}}


@dataclass(frozen=True)
class Case:
    """fn(*inputs) -> a tensor or a tuple of tensors. make(dtype, gen) -> the inputs on the
    CPU; floating-point inputs listed in `grads` receive gradients. exact: compared bit for
    bit with the CPU in the same dtype (no gradients)."""

    name: str
    fn: Callable
    make: Callable
    dtype: torch.dtype
    grads: tuple[int, ...] = ()
    exact: bool = False
    env: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        kernel = next((k for k, e in KERNELS.items() if e == self.env), None)
        return "-".join(filter(None, (self.name, str(self.dtype).removeprefix("torch."), kernel)))


def _randn(gen: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def _two_views(rows: int, dim: int):
    return lambda dtype, gen: (_randn(gen, rows, dim, dtype=dtype), _randn(gen, rows, dim, dtype=dtype))


def _regression_cases() -> Iterator[Case]:
    shape = (37, 65, 33)  # odd sizes: tails of every vector width

    def pair(dtype, gen, weight=None):
        x, y = _randn(gen, *shape, dtype=dtype), _randn(gen, *shape, dtype=dtype)
        return (x, y) if weight is None else (x, y, weight)

    def patch_mask(dtype, gen):  # MAE's [N, L] patch mask: a weight broadcast over the features
        return pair(dtype, gen, torch.rand(shape[:2], generator=gen) < 0.75)

    def probabilities(dtype, gen):
        x = torch.rand(shape, generator=gen, dtype=torch.float64).clamp(0.01, 0.99).to(dtype)
        y = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
        return x, y, _randn(gen, shape[-1]).abs()  # a weight, broadcast over the last dimension

    def logits(dtype, gen):
        x, y, pos_weight = probabilities(dtype, gen)
        return _randn(gen, *shape, dtype=dtype), y, pos_weight

    def transposed(dtype, gen):  # strided operands: the OffsetCalculator path
        x, y = pair(dtype, gen)
        return x.transpose(0, 2), y.transpose(0, 2)

    yield Case("smooth_l1", lambda x, y: ssl_fast.smooth_l1_loss(x, y, beta=0.5), pair, torch.float32, (0, 1))
    yield Case("smooth_l1_strided", ssl_fast.smooth_l1_loss, transposed, torch.float32, (0, 1))
    yield Case("smooth_l1_mask", lambda x, y, m: ssl_fast.smooth_l1_loss(x, y, mask=m), patch_mask,
               torch.bfloat16, (0,))
    yield Case("mse_none", lambda x, y: ssl_fast.mse_loss(x, y, reduction="none"), pair, torch.float16,
               (0, 1))
    yield Case("mse_mask", lambda x, y, m: ssl_fast.mse_loss(x, y, mask=m), patch_mask, torch.float32, (0,))
    yield Case("bce", lambda x, y, w: ssl_fast.binary_cross_entropy(x, y, weight=w.to(x.dtype)),
               probabilities, torch.float32, (0, 1))
    yield Case("bce_with_logits",
               lambda x, y, p: ssl_fast.binary_cross_entropy_with_logits(x, y, pos_weight=p.to(x.dtype)),
               logits, torch.bfloat16, (0, 1))


def _masking_cases() -> Iterator[Case]:
    vocab, mask_id = 30522, 103

    def ids(rows: int, length: int):
        def make(dtype, gen):
            return (torch.randint(0, vocab, (rows, length), generator=gen, dtype=dtype),)
        return make

    def words(dtype, gen):
        (x,) = ids(8, 301)(dtype, gen)
        return x, torch.arange(301).div(3, rounding_mode="floor").expand(8, 301).contiguous()

    def bert(**kw):
        return lambda x, *w: ssl_fast.mask_tokens(x, mask_id, vocab, seed=7, special_token_ids=[0, 101, 102],
                                                  **({"word_ids": w[0]} if w else {}), **kw)

    yield Case("mask_tokens", bert(check_ids=False), ids(16, 509), torch.int64, exact=True)
    yield Case("mask_tokens_int32", bert(check_ids=False, exclude_special_from_random=True), ids(16, 509),
               torch.int32, exact=True)
    yield Case("mask_tokens_exact", bert(check_ids=False, exact_count=True), ids(16, 509), torch.int64,
               exact=True)
    yield Case("mask_tokens_words", bert(check_ids=False), words, torch.int64, exact=True)
    yield Case("mask_tokens_check_ids", bert(), ids(16, 509), torch.int64, exact=True)
    yield Case("random_masking", lambda x: ssl_fast.random_masking(x, 0.75, seed=7),
               lambda dtype, gen: (_randn(gen, 6, 197, 96, dtype=dtype),), torch.bfloat16, exact=True)
    # Its backward (a scatter of the kept patches' gradient) against the CPU in float64.
    yield Case("random_masking_backward", lambda x: ssl_fast.random_masking(x, 0.75, seed=7)[0],
               lambda dtype, gen: (_randn(gen, 6, 197, 96, dtype=dtype),), torch.float32, (0,))


def _contrastive_cases() -> Iterator[Case]:
    def queue(dtype, gen):  # K > M keys (a queue of extra negatives), labels into them
        q, k = _randn(gen, 200, 96, dtype=dtype), _randn(gen, 333, 96, dtype=dtype)
        return q, k, torch.randint(0, 333, (200,), generator=gen)

    def learnable(dtype, gen):
        q, k = _two_views(257, 128)(dtype, gen)
        return q, k, torch.tensor(2.6, dtype=torch.float32)

    def classes(dtype, gen):
        return _randn(gen, 300, 2, 64, dtype=dtype), torch.randint(0, 20, (300,), generator=gen)

    def siglip_inputs(dtype, gen):
        img, txt = _two_views(301, 80)(dtype, gen)
        return (torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(txt, dim=1),
                torch.tensor(10.0), torch.tensor(-10.0))

    calls = [
        Case("nt_xent", ssl_fast.nt_xent, _two_views(300, 96), torch.float32, (0, 1)),
        Case("nt_xent", ssl_fast.nt_xent, _two_views(300, 96), torch.bfloat16, (0, 1)),
        Case("nt_xent", ssl_fast.nt_xent, _two_views(261, 256), torch.float16, (0, 1)),
        Case("info_nce_queue", lambda q, k, y: ssl_fast.info_nce(q, k, labels=y), queue, torch.bfloat16,
             (0, 1)),
        Case("info_nce_symmetric", lambda q, k: ssl_fast.info_nce(q, k, symmetric=True), _two_views(257, 128),
             torch.float32, (0, 1)),
        Case("info_nce_logit_scale", lambda q, k, s: ssl_fast.info_nce(q, k, logit_scale=s, symmetric=True),
             learnable, torch.bfloat16, (0, 1, 2)),
        Case("sup_con", ssl_fast.sup_con, classes, torch.float32, (0,)),
        Case("dcl", ssl_fast.dcl, _two_views(300, 96), torch.bfloat16, (0, 1)),
    ]
    for case in calls:
        for env in KERNELS.values():
            yield Case(case.name, case.fn, case.make, case.dtype, case.grads, env=env)
    yield Case("siglip", ssl_fast.siglip, siglip_inputs, torch.float32, (0, 1, 2, 3))
    yield Case("siglip", ssl_fast.siglip, siglip_inputs, torch.bfloat16, (0, 1, 2, 3))


def all_cases() -> list[Case]:
    return [*_regression_cases(), *_masking_cases(), *_contrastive_cases()]


@contextlib.contextmanager
def _environ(env: dict) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def host_sync_forbidden() -> Iterator[None]:
    """CUDA calls that make the host wait for the device raise inside the block."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@contextlib.contextmanager
def _side_stream(device: str) -> Iterator[None]:
    """On CUDA, the block runs on a new stream, ordered after the current one and before what
    follows it: a kernel launched on another stream than the current one races with its
    inputs or its readers."""
    if device != "cuda":
        yield
        return
    main, side = torch.cuda.current_stream(), torch.cuda.Stream()
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield
    main.wait_stream(side)


def _call(case: Case, inputs: list[torch.Tensor], device: str, dtype: torch.dtype, sync_check: bool):
    """Outputs and gradients of one call on `device` in `dtype` (floating inputs cast to it;
    a 0-dim one, a learnable scalar, keeps float32 except in the float64 reference)."""
    moved = []
    for i, t in enumerate(inputs):
        if t.is_floating_point() and (t.dim() > 0 or dtype == torch.float64):
            t = t.to(dtype)
        t = t.to(device)
        if i in case.grads:
            t = t.detach().requires_grad_()
        moved.append(t)
    if sync_check:
        case.fn(*moved)  # a first call's one-time set-up (handles, workspaces) is not the op's
    with host_sync_forbidden() if sync_check else contextlib.nullcontext(), _side_stream(device):
        outputs = case.fn(*moved)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        grads = []
        if case.grads:
            grads = list(torch.autograd.grad(outputs[0].sum(), [moved[i] for i in case.grads]))
    return [o.detach() for o in outputs] + grads


def _relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double().cpu(), ref.double().cpu()
    if not torch.isfinite(ours).all():
        return float("inf")
    return ((ours - ref).norm() / ref.norm().clamp(min=1e-300)).item()


def run_case(case: Case, device: str, sync_check: bool) -> tuple[str, str]:
    """(verdict, detail): verdict 'ok', 'FAIL', 'SYNC' (unexpected) or 'sync' (known)."""
    gen = torch.Generator().manual_seed(0)
    inputs = list(case.make(case.dtype, gen))
    known = KNOWN_SYNCS.get(case.name)
    with _environ(case.env):
        try:
            ours = _call(case, inputs, device, case.dtype, sync_check and known is None)
        except RuntimeError as e:
            if sync_check and "synchroniz" in str(e).lower():
                return "SYNC", str(e).splitlines()[0]
            raise
        if sync_check and known is not None:
            try:
                _call(case, inputs, device, case.dtype, True)
                return "FAIL", f"listed as synchronising ({known}), but did not: update KNOWN_SYNCS"
            except RuntimeError:
                pass
        ref = _call(case, inputs, "cpu", case.dtype if case.exact else torch.float64, False)
    if case.exact:
        right = all(torch.equal(a.cpu(), b) for a, b in zip(ours, ref, strict=True))
        detail = "bitwise equal to the CPU" if right else "differs from the CPU kernel"
    else:
        worst = max(_relative_error(a, b) for a, b in zip(ours, ref, strict=True))
        right = worst <= TOLERANCE[case.dtype]
        detail = f"largest relative error {worst:.2e} (limit {TOLERANCE[case.dtype]:.2g})"
    if not right:
        return "FAIL", detail
    if sync_check and known is not None:
        return "sync", f"{detail}; synchronises: {known}"
    return "ok", detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--cases", nargs="*", help="names of the cases to run (default: all)")
    parser.add_argument("--no-sync-check", action="store_true",
                        help="leave the sync debug mode off (under compute-sanitizer: it checks memory)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device")
    os.environ["SSL_FAST_BACKEND"] = "ext"  # a missing kernel is an error, not a fallback
    sync_check = args.device == "cuda" and not args.no_sync_check
    cases = [c for c in all_cases() if not args.cases or c.name in args.cases]
    if not cases:
        parser.error(f"no case named {args.cases}")
    failed = 0
    for case in cases:
        start = time.perf_counter()
        try:
            verdict, detail = run_case(case, args.device, sync_check)
        except Exception as e:  # noqa: BLE001 - every case is reported, the run goes on
            verdict, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        failed += verdict in ("FAIL", "SYNC")
        print(f"{verdict:4}  {case.id:42} {time.perf_counter() - start:6.2f} s  {detail}", flush=True)
    print(f"{len(cases) - failed} of {len(cases)} cases passed on {args.device}"
          + (" (sync debug mode: error)" if sync_check else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
