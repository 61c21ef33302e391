"""NT-Xent across 2 CPU processes (gloo) equals NT-Xent on the concatenated batch in one process."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import ssl_fast

WORLD, N, D, T = 2, 5, 6, 0.3


def _data():
    gen = torch.Generator().manual_seed(7)
    x0, x1 = torch.randn(WORLD * N, D, generator=gen), torch.randn(WORLD * N, D, generator=gen)
    torch.manual_seed(11)
    return x0, x1, torch.nn.Linear(D, 4)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x0, x1, model = _data()
        own = slice(rank * N, (rank + 1) * N)
        # The inputs of this rank, directly.
        z0, z1 = x0[own].clone().requires_grad_(), x1[own].clone().requires_grad_()
        loss = ssl_fast.nt_xent(z0, z1, T, gather_distributed=True)
        loss.backward()
        # A DDP model: both views in one forward, the module loss gathering across ranks.
        ddp = DistributedDataParallel(model)
        out0, out1 = ddp(torch.cat([x0[own], x1[own]])).chunk(2)
        ddp_loss = ssl_fast.NTXentLoss(T, gather_distributed=True)(out0, out1)
        ddp_loss.backward()
        torch.save(
            {"loss": loss.detach(), "grads": (z0.grad, z1.grad), "ddp_loss": ddp_loss.detach(),
             "param_grads": [p.grad for p in model.parameters()]},
            f"{out_dir}/{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]

    x0, x1, model = _data()
    z0, z1 = x0.clone().requires_grad_(), x1.clone().requires_grad_()
    loss = ssl_fast.nt_xent(z0, z1, T)
    loss.backward()
    out0, out1 = model(torch.cat([x0, x1])).chunk(2)
    model_loss = ssl_fast.nt_xent(out0, out1, T)
    model_loss.backward()

    # Each rank's loss is the mean over its rows: their average is the global mean.
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, loss.detach())
    torch.testing.assert_close(sum(r["ddp_loss"] for r in ranks) / WORLD, model_loss.detach())
    for rank, result in enumerate(ranks):
        own = slice(rank * N, (rank + 1) * N)
        # Every rank's loss depends on every rank's inputs: the gathered gradients are summed,
        # so the input gradient is WORLD times that of the global mean (not 1 / WORLD of it).
        for got, full in zip(result["grads"], (z0.grad, z1.grad), strict=True):
            torch.testing.assert_close(got, WORLD * full[own])
        # After DDP's averaging, the parameter gradients are those of one process on the whole batch.
        for got, p in zip(result["param_grads"], model.parameters(), strict=True):
            torch.testing.assert_close(got, p.grad)
