"""ssl_fast benchmarks as pytest-benchmark files: each runs the cases of one family module of
ssl_fast.bench (`pytest benchmarks/ --benchmark-only`, options in ssl_fast.bench.plugin).

A package so that pytest imports the files as benchmarks.* with the repository root on
sys.path, where the in-place build of ssl_fast is found.
"""
