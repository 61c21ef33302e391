"""NT-Xent: ssl_fast against the materialised formula and inf_cl.

Cases and providers: ssl_fast.bench.contrastive.
"""

from ssl_fast.bench.contrastive import test_contrastive  # noqa: F401  (collected here)
