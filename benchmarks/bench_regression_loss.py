"""Regression losses (smooth_l1, mse): ssl_fast's fused kernels against torch.nn.functional.

Cases and providers: ssl_fast.bench.regression_loss.
"""

from ssl_fast.bench.regression_loss import test_regression_loss  # noqa: F401  (collected here)
