"""Regression losses: ssl_fast's fused smooth_l1, mse and binary cross-entropies (bce on
probabilities, bce_with_logits) against torch.nn.functional."""

from __future__ import annotations

import math

import torch

from .harness import OpBench, Shape

# Reads and writes that a fused kernel cannot avoid on CUDA, in elements of the dtype:
# the forward reads input and target (2n); the backward reads them again and writes
# d loss / d input (3n); full = 5n, i.e. 20n bytes in fp32 and 10n in bf16. (On the CPU
# with grad_output == 1 the forward writes the gradient and the backward returns it:
# 3n in all, against torch's 7n plus two freshly page-faulted n-element buffers.)
_ELEMENTS_MOVED = {"forward": 2, "backward": 3, "full": 5}


def regression_loss_bytes(mode: str, shape: Shape, element_size: int) -> int:
    return _ELEMENTS_MOVED[mode] * math.prod(shape) * element_size


# The CPU headline is 16M fp32 elements; 41x401x127 is prime-ish, off every tile.
CASES = {
    "cpu": (((4096, 4096), "float32"), ((41, 401, 127), "float32"), ((4096, 4096), "bfloat16")),
    "cuda": (((8192, 8192), "float32"), ((8192, 8192), "bfloat16")),
}


def _logits_and_targets(shape: Shape, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Logits of spread 2 (the input, with requires_grad: the forward mode runs without
    grad) and soft targets in [0, 1]."""
    x = 2 * torch.randn(shape, device=device)
    return [x.to(dtype).requires_grad_(), torch.rand(shape, device=device).to(dtype)]


def _probabilities_and_targets(shape: Shape, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    x, y = _logits_and_targets(shape, dtype, device)
    return [torch.sigmoid(x.detach()).requires_grad_(), y]


BENCHES = [
    OpBench(
        "smooth_l1",
        {"torch": "torch.nn.functional:smooth_l1_loss", "ssl_fast": "ssl_fast:smooth_l1_loss"},
        CASES,
        regression_loss_bytes,
    ),
    OpBench(
        "mse",
        {"torch": "torch.nn.functional:mse_loss", "ssl_fast": "ssl_fast:mse_loss"},
        CASES,
        regression_loss_bytes,
    ),
    OpBench(
        "bce_with_logits",
        {
            "torch": "torch.nn.functional:binary_cross_entropy_with_logits",
            "ssl_fast": "ssl_fast:binary_cross_entropy_with_logits",
        },
        CASES,
        regression_loss_bytes,
        make_inputs=_logits_and_targets,
    ),
    OpBench(
        "bce",
        {"torch": "torch.nn.functional:binary_cross_entropy", "ssl_fast": "ssl_fast:binary_cross_entropy"},
        CASES,
        regression_loss_bytes,
        make_inputs=_probabilities_and_targets,
    ),
]


def test_regression(case, measure):
    measure(case)
