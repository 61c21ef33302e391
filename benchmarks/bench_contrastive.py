"""NT-Xent (against the materialised formula and inf_cl); SupCon and DCL (against the
formulas, pytorch-metric-learning, lightly and ssl_fast's NT-Xent); SigLIP (against the
materialised formula and open_clip's SigLipLoss).

Cases and providers: ssl_fast.bench.contrastive.
"""

from ssl_fast.bench.contrastive import test_contrastive  # noqa: F401  (collected here)
