"""benchmarks/gpu_cases.py: one small call of every CUDA kernel, checked against the CPU and,
on CUDA, for host synchronisations (torch.cuda.set_sync_debug_mode("error"))."""

from __future__ import annotations

import pytest
from conftest import requires_cuda

from benchmarks import gpu_cases

CASES = gpu_cases.all_cases()


def test_every_case_runs_on_the_cpu(capsys):
    assert gpu_cases.main(["--device", "cpu"]) == 0, capsys.readouterr().out


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_known_syncs_name_cases():
    assert set(gpu_cases.KNOWN_SYNCS) <= {c.name for c in CASES}


@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=[f"cuda-{c.id}" for c in CASES])
def test_case_on_cuda_without_synchronisation(case, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    verdict, detail = gpu_cases.run_case(case, "cuda", sync_check=True)
    assert verdict in ("ok", "sync"), f"{case.id}: {verdict}: {detail}"
