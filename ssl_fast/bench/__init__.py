"""Benchmarks of ssl_fast's ops against torch and peer libraries, on pytest-benchmark.

`python -m ssl_fast bench OP...` runs them; so does pytest, on the files of benchmarks/ in
a checkout. harness: cases, timing, peak memory, CSV rows and tables; plugin: the pytest
wiring; plot: time and peak memory against size; one module per op family with its
providers and default cases (regression, contrastive, masking, batch). Needs the
`bench` extra (pytest-benchmark); plots need the `plot` extra (matplotlib).
"""

# `bench` op name -> (family module, pytest -k expression selecting its cases).
OPS = {
    "smooth_l1": ("regression", "smooth_l1"),
    "mse": ("regression", "mse"),
    "bce": ("regression", "bce and not bce_with_logits"),
    "bce_with_logits": ("regression", "bce_with_logits"),
    "nt_xent": ("contrastive", "nt_xent"),
    "info_nce": ("contrastive", "info_nce"),
    "sup_con": ("contrastive", "sup_con"),
    "dcl": ("contrastive", "dcl"),
    "siglip": ("contrastive", "siglip"),
    "mask_tokens": ("masking", "mask_tokens"),  # both variants (with and without a special mask)
    "random_masking": ("masking", "random_masking"),
    "simclr_batch": ("batch", "simclr_batch"),  # largest batch in a memory budget, chunked or not
}
