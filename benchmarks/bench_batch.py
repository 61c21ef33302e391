"""The largest SimCLR batch in a memory budget, with and without gradient caching.

Cases and providers: ssl_fast.bench.batch.
"""

from ssl_fast.bench.batch import test_batch  # noqa: F401  (collected here)
