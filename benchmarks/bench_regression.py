"""Regression losses (smooth_l1, mse, bce, bce_with_logits): ssl_fast's fused kernels against
torch.nn.functional.

Cases and providers: ssl_fast.bench.regression.
"""

from ssl_fast.bench.regression import test_regression  # noqa: F401  (collected here)
