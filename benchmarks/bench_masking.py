"""Masking (mask_tokens, random_masking): ssl_fast against transformers' collator and MAE.

Cases and providers: ssl_fast.bench.masking.
"""

from ssl_fast.bench.masking import test_masking  # noqa: F401  (collected here)
