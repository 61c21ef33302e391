"""NT-Xent, InfoNCE, DCL, SupCon, SigLIP and training across 2 CPU processes (gloo) equal one
process on the concatenated batch."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import ssl_fast
from ssl_fast.bench.peers import has_lightly, lightly_loss
from ssl_fast.distributed import destroy_process_group

WORLD, N, D, T = 2, 5, 6, 0.3
REPO = Path(__file__).resolve().parents[1]


def _data():
    gen = torch.Generator().manual_seed(7)
    x0, x1 = torch.randn(WORLD * N, D, generator=gen), torch.randn(WORLD * N, D, generator=gen)
    torch.manual_seed(11)
    return x0, x1, torch.nn.Linear(D, 4)


CLIP_FORMS = ("one-way", "symmetric")


def _clip(query, key, form: str, **kw) -> list[torch.Tensor]:
    """InfoNCE with a learnable logit scale: the loss, d query, d key and d logit_scale."""
    query, key = query.clone().requires_grad_(), key.clone().requires_grad_()
    logit_scale = torch.tensor(1.5, requires_grad=True)
    loss = ssl_fast.info_nce(query, key, symmetric=form == "symmetric", logit_scale=logit_scale, **kw)
    loss.backward()
    return [loss.detach(), query.grad, key.grad, logit_scale.grad]


# DCL without weights, with a per-pair weight_fn that has a gradient, and DCLW (whose weights
# are a softmax over the local batch, so it equals lightly's, not one process's).
DCL_FORMS = ("dcl", "custom", "dclw")


def _dcl_module(form: str, lightly: bool = False, **kw):
    if form == "dclw":
        cls = lightly_loss("dcl_loss", "DCLWLoss") if lightly else ssl_fast.DCLWLoss
        return cls(0.2, 0.7, **kw)
    weight_fn = (lambda a, b: ((a - b) ** 2).sum(1)) if form == "custom" else None
    cls = lightly_loss("dcl_loss", "DCLLoss") if lightly else ssl_fast.DCLLoss
    return cls(0.2, weight_fn, **kw)


def _dcl(z0, z1, form: str, lightly: bool = False, **kw) -> list[torch.Tensor] | None:
    """The DCL loss of float64 views and its gradients (None where lightly is absent)."""
    try:
        module = _dcl_module(form, lightly, **kw)
    except ImportError:
        return None
    z0, z1 = z0.double().requires_grad_(), z1.double().requires_grad_()
    loss = module(z0, z1)
    loss.backward()
    return [loss.detach(), z0.grad, z1.grad]


# SupCon on the two views of each sample as [N, 2, D]: classes shared across the ranks, and
# labels=None (each sample its own class, numbered across the ranks).
SUP_CON_LABELS = ("classes", "samples")


def _sup_con(x0, x1, labels: str, first: int, **kw) -> list[torch.Tensor]:
    """SupCon's mean and its gradient, and the row losses, of float64 views."""
    z = torch.stack([x0, x1], 1).double().requires_grad_()
    y = (torch.arange(len(z)) + first) % 3 if labels == "classes" else None
    loss = ssl_fast.SupConLoss(0.2, **kw)(z, y)
    loss.backward()
    return [loss.detach(), z.grad, ssl_fast.sup_con(z, y, 0.2, "none", **kw).detach()]
def _siglip(img, txt, module: bool = False, **kw) -> list[torch.Tensor]:
    """SigLIP with a learnable scale and bias: the loss and the gradients of img, txt, scale, bias."""
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale, bias = torch.tensor(2.0, requires_grad=True), torch.tensor(-1.5, requires_grad=True)
    loss_fn = ssl_fast.SigLipLoss(**kw) if module else functools.partial(ssl_fast.siglip, **kw)
    loss = loss_fn(img, txt, scale, bias)
    loss.backward()
    return [loss.detach(), img.grad, txt.grad, scale.grad, bias.grad]


def _in_process_group(rank: int, init_file: str, body, *args) -> None:
    """body(rank, *args) as a rank of a gloo group; what body made is gone before the group
    is destroyed (see destroy_process_group)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        body(rank, *args)
    finally:
        destroy_process_group()


def _worker(rank: int, out_dir: str) -> None:
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
    clip = {form: _clip(x0[own], x1[own], form, gather_distributed=True) for form in CLIP_FORMS}
    family = {(form, lightly): _dcl(x0[own], x1[own], form, lightly == "lightly", gather_distributed=True)
           for form in DCL_FORMS for lightly in ("ours", "lightly")}
    family = {f"{form} {who}": result for (form, who), result in family.items()}
    family.update({f"sup_con {labels}": _sup_con(x0[own], x1[own], labels, rank * N, gather_distributed=True)
                for labels in SUP_CON_LABELS})
    siglip = {
        "functional": _siglip(x0[own], x1[own], gather_distributed=True),
        "module": _siglip(x0[own], x1[own], module=True, rank=rank, world_size=WORLD),
    }
    torch.save(
        {"loss": loss.detach(), "grads": (z0.grad, z1.grad), "ddp_loss": ddp_loss.detach(),
         "param_grads": [p.grad for p in model.parameters()], "clip": clip, "family": family,
         "siglip": siglip},
        f"{out_dir}/{rank}.pt",
    )


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_equal_one(tmp_path):
    args = (str(tmp_path / "init"), _worker, str(tmp_path))
    mp.spawn(_in_process_group, args=args, nprocs=WORLD, join=True)
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
    # InfoNCE (CLIP): the same relations, and the logit scale's gradient averages to the global one.
    for form in CLIP_FORMS:
        full_loss, dq, dk, dscale = _clip(x0, x1, form)
        got = [r["clip"][form] for r in ranks]
        torch.testing.assert_close(sum(g[0] for g in got) / WORLD, full_loss)
        torch.testing.assert_close(sum(g[3] for g in got) / WORLD, dscale)
        for rank, (_, got_dq, got_dk, _) in enumerate(got):
            own = slice(rank * N, (rank + 1) * N)
            torch.testing.assert_close(got_dq, WORLD * dq[own])
            torch.testing.assert_close(got_dk, WORLD * dk[own])
    # DCL: each rank equals lightly's gathered loss (float64, values and gradients) and,
    # with weights of each pair alone, the relations of NT-Xent with one process.
    for form in DCL_FORMS:
        for result in ranks:
            ours, theirs = result["family"][f"{form} ours"], result["family"][f"{form} lightly"]
            assert theirs is not None or not has_lightly()
            if theirs is not None:
                for got, want in zip(ours, theirs, strict=True):
                    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        if form == "dclw":
            continue
        full_loss, d0, d1 = _dcl(x0, x1, form)
        torch.testing.assert_close(sum(r["family"][f"{form} ours"][0] for r in ranks) / WORLD, full_loss)
        for rank, result in enumerate(ranks):
            own = slice(rank * N, (rank + 1) * N)
            torch.testing.assert_close(result["family"][f"{form} ours"][1], WORLD * d0[own])
            torch.testing.assert_close(result["family"][f"{form} ours"][2], WORLD * d1[own])
    # SupCon: the same relations (the mean over the world's rows with a loss), and the rows.
    for labels in SUP_CON_LABELS:
        full_loss, dz, full_rows = _sup_con(x0, x1, labels, 0)
        got = [r["family"][f"sup_con {labels}"] for r in ranks]
        torch.testing.assert_close(sum(g[0] for g in got) / WORLD, full_loss)
        for rank, (_, got_dz, got_rows) in enumerate(got):
            own = slice(rank * N, (rank + 1) * N)
            torch.testing.assert_close(got_dz, WORLD * dz[own])
            torch.testing.assert_close(got_rows, full_rows[own])
    # SigLIP (each rank's images against every rank's texts): the same relations, for the
    # scale and the bias too.
    full_loss, dimg, dtxt, dscale, dbias = _siglip(x0, x1)
    for form in ("functional", "module"):
        got = [r["siglip"][form] for r in ranks]
        torch.testing.assert_close(sum(g[0] for g in got) / WORLD, full_loss)
        torch.testing.assert_close(sum(g[3] for g in got) / WORLD, dscale)
        torch.testing.assert_close(sum(g[4] for g in got) / WORLD, dbias)
        for rank, (_, got_dimg, got_dtxt, _, _) in enumerate(got):
            own = slice(rank * N, (rank + 1) * N)
            torch.testing.assert_close(got_dimg, WORLD * dimg[own])
            torch.testing.assert_close(got_dtxt, WORLD * dtxt[own])


def test_gathered_info_nce_pairs_query_i_with_key_i():
    q = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"no labels and as many keys as queries \(got 4 queries, 6 keys\)"):
        ssl_fast.info_nce(q, torch.randn(6, 3), gather_distributed=True)
    with pytest.raises(ValueError, match=r"got 4 queries, 4 keys, labels"):
        ssl_fast.info_nce(q, q, labels=torch.arange(4), gather_distributed=True)
    # One process: the plain loss.
    k = q * 2 + 1
    torch.testing.assert_close(ssl_fast.info_nce(q, k, gather_distributed=True), ssl_fast.info_nce(q, k))


# ----------------------------------------------------------------- the trainer under torch.distributed
# Each rank trains on its shard of every epoch with its own batch; the two batches of a step are
# together the batch of a one-process run with twice the batch size (DistributedSampler deals
# the same permutation out in turn), and NT-Xent does not depend on the order of the pairs: so
# two ranks must end with the parameters of one process, with DDP and with chunked steps.

STEPS, PER_RANK = 3, 8


def _simclr_run(out_dir: str, batch_size: int, chunk_size: int = 0):
    from ssl_fast.models import SimCLR
    from ssl_fast.train import TrainConfig, Trainer

    gen = torch.Generator().manual_seed(3)
    views = torch.randn(64, 12, generator=gen), torch.randn(64, 12, generator=gen)
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU())
    model = SimCLR(backbone, 32, hidden_dim=32, out_dim=8, temperature=0.3, head_norm=False,
                   gather_distributed=dist.is_initialized())
    config = TrainConfig(steps=STEPS, batch_size=batch_size, lr=1e-2, warmup_steps=1, out_dir=out_dir,
                         chunk_size=chunk_size, tensorboard=False)
    trainer = Trainer(model, torch.utils.data.TensorDataset(*views), config)
    trainer.fit(progress=False)
    return trainer


def _trainer_worker(rank: int, out_dir: str, chunk_size: int) -> None:
    trainer = _simclr_run(out_dir, PER_RANK, chunk_size)
    torch.save([p.detach() for p in trainer.model.parameters()], f"{out_dir}/params{rank}.pt")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("chunk_size", [0, 3], ids=["ddp", "chunked"])
def test_two_ranks_train_as_one_process(chunk_size, tmp_path):
    args = (str(tmp_path / "init"), _trainer_worker, str(tmp_path), chunk_size)
    mp.spawn(_in_process_group, args=args, nprocs=WORLD, join=True)
    one = _simclr_run(str(tmp_path / "one"), WORLD * PER_RANK)
    for rank in range(WORLD):
        params = torch.load(tmp_path / f"params{rank}.pt", weights_only=True)
        for got, expected in zip(params, one.model.parameters(), strict=True):
            torch.testing.assert_close(got, expected.detach())
    # Rank 0 alone wrote the metrics and the checkpoint, with the random states of both ranks.
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert len(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["rng"]) == WORLD


def test_torchrun_train_command(tmp_path):
    """`torchrun --nproc_per_node 2 -m ssl_fast train simclr` on the CPU (gloo)."""
    pytest.importorskip("sklearn")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ssl_fast", "train", "simclr", "--steps", "2", "--batch-size", "32",
               "--out", str(tmp_path), "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1  # rank 0 alone evaluates
    assert results[0]["world_size"] == 2 and results[0]["steps"] == 2
    assert (tmp_path / "simclr" / "checkpoint.pt").is_file()
