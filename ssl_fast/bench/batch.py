"""The largest SimCLR batch that fits a memory budget, with and without gradient caching.

One optimizer-free training step of SimCLR (a conv net on the 8x8 digits images, the
projection head, ssl_fast.nt_xent), either on the whole batch (`full`: the activations of
both views of every image are kept for the backward) or in chunks of CHUNK images
(`chunk64`: SimCLR.backward_chunked, which keeps the activations of one chunk and runs the
encoder twice). The case size is the memory budget: `--sizes 8M,32M`; on CUDA by default
the card's free memory. The memory of a step counts the batch, the model and its gradients
(the inputs), with its peak above them; the batch is searched by doubling, then bisection
to 5%. Each provider's step is also timed at the largest batch of `full`.

On a busy machine, set OMP_NUM_THREADS=1 (it is recorded with the rows): the chunks' many
small ops otherwise wait for threads that other processes hold. On 2 shared cores the
chunked step of 1024 images took 30 s with 2 threads and 1.7 s with one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import SimCLR
from .harness import CARD, Case, OpBench, Shape

CHUNK = 64
IMAGE = (1, 8, 8)

# CPU: the chunked batch is about 20 times the full one, so a budget of 8 MiB already makes
# its search the longer part (about a minute on 2 cores); each doubling of the budget doubles
# that at least (the loss costs O(N^2)). CUDA: the whole card.
CASES = {"cpu": (((8 << 20,), "float32"),), "cuda": (((CARD,), "float32"),)}


def _block(inputs: int, outputs: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(inputs, outputs, 3, stride, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


def simclr_batch(shape: Shape, dtype: torch.dtype, device: torch.device) -> list:
    """A SimCLR model whose activations dominate its memory, as in real training, and two
    views of a batch of shape[0] images. No batch norm in the head, so that both steps
    compute the same gradients."""
    backbone = nn.Sequential(*_block(1, 16), *_block(16, 32), *_block(32, 64, stride=2),
                             nn.AdaptiveAvgPool2d(1))
    model = SimCLR(backbone, 64, hidden_dim=256, out_dim=128, head_norm=False).to(device, dtype)
    return [model, *(torch.randn(shape[0], *IMAGE, dtype=dtype, device=device) for _ in range(2))]


def full_step(model: SimCLR, view0: torch.Tensor, view1: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model.loss(view0, view1).backward()


def chunked_step(model: SimCLR, view0: torch.Tensor, view1: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model.backward_chunked(view0, view1, CHUNK)


def _skip(case: Case) -> str | None:
    if len(case.shape) != 1:
        return f"the size of {case.op} is a memory budget such as 256M, not a shape"
    if case.dtype != "float32":
        return f"{case.op} trains in float32"
    return None


BENCHES = [
    OpBench(
        "simclr_batch",
        {"full": "ssl_fast.bench.batch:full_step", f"chunk{CHUNK}": "ssl_fast.bench.batch:chunked_step"},
        CASES,
        modes=("step",),
        max_rounds=5,
        skip=_skip,
        make_inputs=simclr_batch,
        count_inputs=True,
    ),
]


def test_batch(case, measure_batch):
    measure_batch(case)
