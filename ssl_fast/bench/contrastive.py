"""NT-Xent and SigLIP (its cases at the end of this module).

NT-Xent: ssl_fast against the materialised formula (normalize, the 2N x 2N logits,
cross-entropy), all on z0, z1 of the case shape [N, D], temperature 0.5.

Providers:
  torch           the materialised formula (ssl_fast.reference.nt_xent);
  ssl_fast        SSL_FAST_CONTRASTIVE_KERNEL=fused: on CUDA the tensor-core kernels where
                  they apply (16-bit inputs; fp32 only while TF32 is allowed, which these
                  runs leave at torch's default, so fp32 rows run stage 1), else stage 1;
                  on the CPU its one kernel;
  ssl_fast-tiled  CUDA only: SSL_FAST_CONTRASTIVE_KERNEL=tiled (stage 1, cuBLAS strips);
  inf_cl          CUDA only, when the inf_cl package is installed: its cal_inf_loss on the
                  same 2N x 2N logits (see nt_xent_inf_cl).

SupCon and DCL (below): on the same inputs, beside a peer library and ssl_fast's NT-Xent.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import ssl_fast
from ssl_fast import reference

from .harness import Case, OpBench, Shape
from .peers import has_lightly, lightly_loss

TEMPERATURE = 0.5
KERNEL_ENV = "SSL_FAST_CONTRASTIVE_KERNEL"
CUDA_ONLY = ("ssl_fast-tiled", "inf_cl")


def _nt_xent_on(kernel: str):
    def nt_xent(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        # Set for the process and left set: the backward of the round reads it as well,
        # and every ssl_fast provider sets its own before its forward.
        os.environ[KERNEL_ENV] = kernel
        return ssl_fast.nt_xent(z0, z1, TEMPERATURE)

    nt_xent.__doc__ = f"ssl_fast.nt_xent with {KERNEL_ENV}={kernel}."
    return nt_xent


nt_xent_fused = _nt_xent_on("fused")
nt_xent_tiled = _nt_xent_on("tiled")


def nt_xent_inf_cl(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """inf_cl's cal_inf_loss (one-way InfoNCE) of the unit rows z = [z0; z1] against
    themselves, each row's positive the other view: NT-Xent's work, except that the
    diagonal (a row with itself) stays in the denominators."""
    from inf_cl import cal_inf_loss

    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = len(z0)
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    scale = torch.tensor(1 / TEMPERATURE, device=z.device)
    return cal_inf_loss(z, z, labels=labels, scale=scale, head_dim=z.shape[1])


def nt_xent_flops(mode: str, shape: Shape) -> int:
    """Useful FLOPs on M = 2N rows of D features: z z^T is symmetric, so the forward needs
    half a GEMM (M^2 D) and the backward a recomputed half plus dz = G z (3 M^2 D). Stage
    1 (ssl_fast-tiled) computes that much, plus its strips' diagonal blocks; the fused
    kernels compute the whole matrix (2 M^2 D forward, 4 M^2 D backward): the rate they
    execute is 2x (forward), 4/3x (backward) and 3/2x (full) the useful rate shown."""
    m, d = 2 * shape[0], shape[1]
    return {"forward": 1, "backward": 3, "full": 4}[mode] * m * m * d


# The materialised formula holds several 2N x 2N matrices at once. On the CPU: above this
# N it would not fit in 24 GB. On CUDA: about M^2 (1 + 4.5 x element size) bytes at its
# peak (the bool diagonal mask, and logits, log-softmax and gradients in the dtype).
_MATERIALISED_MAX_N = 16384
_MATERIALISED_CUDA_FRACTION = 0.8  # of the card's memory

# CPU: N = 8192, D = 128 is the headline; N = 32768 (`--bench-sizes 32768x128`) is for
# ssl_fast alone. The materialised rounds take seconds: 3 timed rounds per case.
# CUDA: 2N = 8k and 64k (the headline), D = 128 and 256.
CASES = {
    "cpu": (((1024, 128), "float32"), ((4096, 128), "float32"), ((8192, 128), "float32"),
            ((4096, 512), "float32")),
    "cuda": tuple(
        ((n, d), dtype) for n in (4096, 32768) for d in (128, 256) for dtype in ("bfloat16", "float32")
    ),
}


def _materialised_too_large(case: Case) -> str | None:
    m = 2 * case.shape[0]
    gib = 2**30
    if case.device == "cpu":
        if case.shape[0] > _MATERIALISED_MAX_N:
            return f"the materialised formula needs several {m}x{m} matrices ({m * m * 4 / gib:.0f} GiB each)"
        return None
    need = m * m * (1 + 4.5 * getattr(torch, case.dtype).itemsize)
    have = torch.cuda.get_device_properties(0).total_memory
    if need > _MATERIALISED_CUDA_FRACTION * have:
        return f"the materialised formula needs about {need / gib:.0f} GiB at 2N = {m} ({have / gib:.0f} GiB)"
    return None


# Stage 1 passes over its fp32 strips of logits about 7 times a step: at 2N = 1M, several
# seconds a step (bf16) to tens of seconds (fp32, multiplied in fp32). Larger sizes are
# for the fused kernels' memory.
_TILED_MAX_ROWS = 1 << 17


def _skip(case: Case) -> str | None:
    if case.provider in CUDA_ONLY and case.device != "cuda":
        return f"{case.provider} runs on CUDA only"
    if case.provider == "ssl_fast-tiled" and 2 * case.shape[0] > _TILED_MAX_ROWS:
        return f"stage 1 would take seconds a step at 2N = {2 * case.shape[0]}"
    return None


def _too_large(case: Case) -> str | None:
    return _materialised_too_large(case) if case.provider == "torch" else None


BENCHES = [
    OpBench(
        "nt_xent",
        {
            "torch": "ssl_fast.reference:nt_xent",
            "ssl_fast": "ssl_fast.bench.contrastive:nt_xent_fused",
            "ssl_fast-tiled": "ssl_fast.bench.contrastive:nt_xent_tiled",
            "inf_cl": "ssl_fast.bench.contrastive:nt_xent_inf_cl",
        },
        CASES,
        n_inputs=2,
        n_grad_inputs=2,
        max_rounds=3,
        skip=_skip,
        flops=nt_xent_flops,
        requires={"inf_cl": "inf_cl"},
        too_large=_too_large,
    ),
]


# ----------------------------------------------------------------- InfoNCE (CLIP)
# N image-text pairs: img, txt [N, D] (2N rows in all, as NT-Xent's z0, z1) and a learnable
# logit_scale at CLIP's initialisation, log(1 / 0.07); the symmetric loss of CLIP.
# Providers:
#   torch           the materialised formula (ssl_fast.reference.info_nce);
#   ssl_fast        ssl_fast.info_nce with SSL_FAST_CONTRASTIVE_KERNEL=fused, as NT-Xent's;
#   ssl_fast-tiled  CUDA only: stage 1;
#   open_clip       its ClipLoss (one process) on the unit rows (it takes them normalised)
#                   and the exponentiated scale, when open_clip_torch is installed;
#   inf_cl          CUDA only, when inf_cl is installed: cal_inf_loss both ways, halved.
CLIP_LOGIT_SCALE = 2.6592600369644165  # log(1 / 0.07)


def info_nce_inputs(shape: Shape, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    img, txt = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    return [img, txt, torch.tensor(CLIP_LOGIT_SCALE, device=device, requires_grad=True)]


def _info_nce_on(kernel: str):
    def info_nce(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        os.environ[KERNEL_ENV] = kernel  # left set for the backward, as _nt_xent_on does
        return ssl_fast.info_nce(img, txt, symmetric=True, logit_scale=logit_scale)

    info_nce.__doc__ = f"ssl_fast.info_nce (symmetric, learnable scale) with {KERNEL_ENV}={kernel}."
    return info_nce


info_nce_fused = _info_nce_on("fused")
info_nce_tiled = _info_nce_on("tiled")


def info_nce_torch(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    return reference.info_nce(img, txt, symmetric=True, logit_scale=logit_scale)


def info_nce_open_clip(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    loss = _open_clip_loss_module().ClipLoss()
    return loss(F.normalize(img, dim=1), F.normalize(txt, dim=1), logit_scale.exp())


def info_nce_inf_cl(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    from inf_cl import cal_inf_loss

    q, k = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    labels = torch.arange(len(q), device=q.device)
    scale = logit_scale.exp()
    return (cal_inf_loss(q, k, labels=labels, scale=scale, head_dim=q.shape[1])
            + cal_inf_loss(k, q, labels=labels, scale=scale, head_dim=q.shape[1])) / 2


def info_nce_flops(mode: str, shape: Shape) -> int:
    """Useful FLOPs of N pairs: the N x N logits (2 N^2 D) serve both directions in the
    forward; the backward recomputes them and takes d img and d txt (6 N^2 D)."""
    n, d = shape
    return {"forward": 2, "backward": 6, "full": 8}[mode] * n * n * d


def _info_nce_skip(case: Case) -> str | None:
    if case.provider == "open_clip" and importlib.util.find_spec("open_clip") is None:
        return "open_clip_torch is not installed"
    return _skip(case)


def _info_nce_too_large(case: Case) -> str | None:
    """The materialised forms hold several N x N matrices (a quarter of NT-Xent's 2N x 2N)."""
    if case.provider in ("ssl_fast", "ssl_fast-tiled", "inf_cl"):
        return None
    return _materialised_too_large(dataclasses.replace(case, shape=(case.shape[0] // 2, case.shape[1])))


BENCHES.append(
    OpBench(
        "info_nce",
        {
            "torch": "ssl_fast.bench.contrastive:info_nce_torch",
            "ssl_fast": "ssl_fast.bench.contrastive:info_nce_fused",
            "ssl_fast-tiled": "ssl_fast.bench.contrastive:info_nce_tiled",
            "open_clip": "ssl_fast.bench.contrastive:info_nce_open_clip",
            "inf_cl": "ssl_fast.bench.contrastive:info_nce_inf_cl",
        },
        CASES,
        max_rounds=3,
        skip=_info_nce_skip,
        flops=info_nce_flops,
        make_inputs=info_nce_inputs,
        requires={"inf_cl": "inf_cl"},
        too_large=_info_nce_too_large,
    )
)

# ----------------------------------------------------------------- SupCon, DCL
# On nt_xent's inputs z0, z1 ([N, D], two views of N samples: 2N rows) at one temperature,
# beside ssl_fast.nt_xent ("ssl_fast-NTXent") for the time of the same tiles. SupCon takes
# the two views of each sample with labels of SUP_CON_CLASSES classes (CIFAR-100's count).
# Providers:
#   torch                    the materialised formulas of ssl_fast.reference;
#   ssl_fast                 ssl_fast.sup_con / ssl_fast.dcl;
#   pytorch-metric-learning  its SupConLoss (CosineSimilarity, AvgNonZeroReducer) on the
#                            2N rows and their labels;
#   lightly                  its DCLLoss.

FAMILY_TEMPERATURE = 0.1
SUP_CON_CLASSES = 100


def _sup_con_labels(z: torch.Tensor) -> torch.Tensor:
    return torch.arange(len(z), device=z.device) % SUP_CON_CLASSES


def sup_con_ssl_fast(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    return ssl_fast.sup_con(torch.stack([z0, z1], 1), _sup_con_labels(z0), FAMILY_TEMPERATURE)


def sup_con_torch(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    return reference.sup_con(torch.stack([z0, z1], 1), _sup_con_labels(z0), FAMILY_TEMPERATURE)


def sup_con_pml(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    from pytorch_metric_learning.losses import SupConLoss

    return SupConLoss(FAMILY_TEMPERATURE)(torch.cat([z0, z1]), _sup_con_labels(z0).repeat(2))


def dcl_ssl_fast(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    return ssl_fast.dcl(z0, z1, FAMILY_TEMPERATURE)


def dcl_torch(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    return reference.dcl(z0, z1, FAMILY_TEMPERATURE)


@functools.cache
def _lightly_dcl() -> torch.nn.Module:
    return lightly_loss("dcl_loss", "DCLLoss")(FAMILY_TEMPERATURE)


def dcl_lightly(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    return _lightly_dcl()(z0, z1)


def nt_xent_beside(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """ssl_fast.nt_xent at the family's temperature."""
    return ssl_fast.nt_xent(z0, z1, FAMILY_TEMPERATURE)


# The peak memory of the materialised formulas and the peers, forward and backward on the
# CPU in fp32, in bytes per element of the 2N x 2N matrix: measured at N = 1024 and 2048,
# where it grows as N^2 (benchmarks/RESULTS.md); scaled by the element size for other
# dtypes. Cases whose estimate exceeds the budget (on CUDA, the materialised NT-Xent's
# fraction of the card) are recorded as out of memory rather than run into swap.
_FAMILY_BYTES_PER_M2 = {
    ("sup_con", "torch"): 21,
    ("sup_con", "pytorch-metric-learning"): 46,
    ("dcl", "torch"): 17,
    ("dcl", "lightly"): 12,
}
_FAMILY_CPU_BUDGET = 8 * 2**30


def _family_skip(case: Case) -> str | None:
    if case.provider == "lightly" and not has_lightly():
        return "lightly is not installed"
    return None


def _family_too_large(case: Case) -> str | None:
    per_m2 = _FAMILY_BYTES_PER_M2.get((case.op, case.provider))
    if per_m2 is None:
        return None
    m = 2 * case.shape[0]
    need = per_m2 * getattr(torch, case.dtype).itemsize / 4 * m * m
    if case.device == "cpu":
        budget = _FAMILY_CPU_BUDGET
    else:
        budget = _MATERIALISED_CUDA_FRACTION * torch.cuda.get_device_properties(0).total_memory
    if need > budget:
        return (f"{case.provider} would need about {need / 2**30:.0f} GiB (from {per_m2} bytes per element "
                f"of the {m}x{m} matrix in fp32), above the {budget / 2**30:.0f} GiB budget")
    return None


FAMILY_CASES = {
    "cpu": (((1024, 128), "float32"), ((2048, 128), "float32"), ((4096, 128), "float32"),
            ((8192, 128), "float32")),
    "cuda": tuple(((n, 128), dtype) for n in (4096, 32768) for dtype in ("bfloat16", "float32")),
}

BENCHES += [
    OpBench(
        "sup_con",
        {
            "torch": "ssl_fast.bench.contrastive:sup_con_torch",
            "ssl_fast": "ssl_fast.bench.contrastive:sup_con_ssl_fast",
            "pytorch-metric-learning": "ssl_fast.bench.contrastive:sup_con_pml",
            "ssl_fast-NTXent": "ssl_fast.bench.contrastive:nt_xent_beside",
        },
        FAMILY_CASES,
        n_inputs=2,
        n_grad_inputs=2,
        max_rounds=3,
        requires={"pytorch-metric-learning": "pytorch_metric_learning"},
        too_large=_family_too_large,
    ),
    OpBench(
        "dcl",
        {
            "torch": "ssl_fast.bench.contrastive:dcl_torch",
            "ssl_fast": "ssl_fast.bench.contrastive:dcl_ssl_fast",
            "lightly": "ssl_fast.bench.contrastive:dcl_lightly",
            "ssl_fast-NTXent": "ssl_fast.bench.contrastive:nt_xent_beside",
        },
        FAMILY_CASES,
        n_inputs=2,
        n_grad_inputs=2,
        max_rounds=3,
        skip=_family_skip,
        too_large=_family_too_large,
    ),
]

def test_contrastive(case, measure):
    measure(case)


# ----------------------------------------------------------------- SigLIP
# Unit rows img, txt of the case shape [N, D] and a learnable scale (10) and bias (-10),
# open_clip's initialisation. Providers:
#   torch      the materialised formula (ssl_fast.reference.siglip_loss);
#   ssl_fast   ssl_fast.siglip (the tiled op);
#   open_clip  open_clip's SigLipLoss, when open_clip_torch is installed (its loss module
#              alone, loaded from its file: the package imports torchvision).


def siglip_inputs(shape: Shape, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    img, txt = (F.normalize(torch.randn(shape, device=device), dim=1).to(dtype) for _ in range(2))
    img.requires_grad_()
    txt.requires_grad_()
    scale = torch.tensor(10.0, device=device, requires_grad=True)
    return [img, txt, scale, torch.tensor(-10.0, device=device, requires_grad=True)]


@functools.cache
def _open_clip_loss_module():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def siglip_torch(img, txt, scale, bias) -> torch.Tensor:
    """The materialised formula."""
    return ssl_fast.reference.siglip_loss(img, txt, scale, bias)


def siglip_open_clip(img, txt, scale, bias) -> torch.Tensor:
    """open_clip's SigLipLoss (one process)."""
    return _open_clip_loss_module().SigLipLoss()(img, txt, scale, bias)


def siglip_flops(mode: str, shape: Shape) -> int:
    """Useful FLOPs: the logits (2 N^2 D) in the forward; the two products of the gradient
    (4 N^2 D) in the backward (the CPU computes them in the forward's pass, CUDA recomputes
    the logits too)."""
    n, d = shape
    return {"forward": 2, "backward": 4, "full": 6}[mode] * n * n * d


def _siglip_skip(case: Case) -> str | None:
    if case.provider == "open_clip" and importlib.util.find_spec("open_clip") is None:
        return "open_clip_torch is not installed"
    return None


def _siglip_too_large(case: Case) -> str | None:
    """The materialised forms hold several N x N matrices (logits, labels, their product,
    log-sigmoid and gradients) of 4 bytes an element."""
    if case.provider == "ssl_fast" or case.device != "cpu" or case.shape[0] <= _MATERIALISED_MAX_N:
        return None
    n = case.shape[0]
    return f"the materialised formula needs several {n}x{n} matrices ({n * n * 4 / 2**30:.0f} GiB each)"


# CPU: N = 8192, D = 128 is the headline; N = 32768 (`--sizes 32768x128`) is for ssl_fast alone.
SIGLIP_CASES = {
    "cpu": (((1024, 128), "float32"), ((4096, 128), "float32"), ((8192, 128), "float32")),
    "cuda": tuple(((n, 128), dtype) for n in (8192, 32768) for dtype in ("bfloat16", "float32")),
}

BENCHES.append(
    OpBench(
        "siglip",
        {
            "torch": "ssl_fast.bench.contrastive:siglip_torch",
            "ssl_fast": "ssl_fast:siglip",
            "open_clip": "ssl_fast.bench.contrastive:siglip_open_clip",
        },
        SIGLIP_CASES,
        max_rounds=3,
        skip=_siglip_skip,
        flops=siglip_flops,
        make_inputs=siglip_inputs,
        too_large=_siglip_too_large,
    )
)
