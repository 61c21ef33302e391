"""One module per operator family: fake kernels, autograd and the functional entry points."""

from . import contrastive, masking, regression

# Every op of the ssl_fast namespace with a kernel, for backend_info().
OPS = regression.OPS + contrastive.OPS + masking.OPS
