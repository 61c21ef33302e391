"""ssl_fast benchmarks: one harness (harness.py), one bench_<op>.py per op family.

A package so that pytest imports the files as benchmarks.* with the repository root on
sys.path (the in-place build of ssl_fast is found there), and so that the fresh
processes that measure peak memory can import benchmarks.harness by name.
"""
