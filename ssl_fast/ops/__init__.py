"""One module per operator family: fake kernels, autograd and the functional entry points."""

from . import contrastive, masking, regression_loss

# Every op of the ssl_fast namespace with a kernel, for backend_info().
OPS = regression_loss.OPS + contrastive.OPS + masking.OPS
