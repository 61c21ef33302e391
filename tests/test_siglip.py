"""SigLIP: ssl_fast.siglip / SigLipLoss and their op against the materialised formula and
open_clip's SigLipLoss."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FLOAT_DTYPES, assert_accurate, randn, requires_cuda

import ssl_fast
from benchmarks.gpu_cases import host_sync_forbidden
from ssl_fast import reference

ops = torch.ops.ssl_fast

# Batch sizes around the 256-row tile: one pair, a prime, just past one tile, several tiles.
SIZES = [(1, 4), (7, 3), (257, 16), (521, 33)]


def towers(n: int, d: int, gen, dtype=torch.float64, requires_grad=True):
    """Unit rows, as SigLIP's towers give them, and a learnable scale and bias (open_clip's
    initialisation: scale exp(log 10), bias -10)."""
    img = F.normalize(randn(n, d, gen=gen), dim=1).to(dtype).requires_grad_(requires_grad)
    txt = F.normalize(randn(n, d, gen=gen), dim=1).to(dtype).requires_grad_(requires_grad)
    scale = torch.tensor(10.0, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    bias = torch.tensor(-10.0, dtype=scale.dtype)
    return img, txt, scale.requires_grad_(requires_grad), bias.requires_grad_(requires_grad)


def value_and_grads(fn, *inputs, weight=1.0):
    out = fn(*inputs)
    grads = torch.autograd.grad(out * weight, [x for x in inputs if x.requires_grad])
    return out.detach(), grads


def formula(img, txt, scale, bias):
    return reference.siglip_loss(img, txt, scale, bias)


def check_against_formula(inputs, what: str, weight=1.0, floor: float = 10.0, ours=None):
    """The criterion of tests/conftest.py on the loss and every gradient: ssl_fast's error
    against the float64 formula is no worse than the formula's own in the inputs' dtype, plus
    a tolerance relative to at least `floor` (a pair's logit is as large as the scale).
    ours: ssl_fast's (loss, gradients) of `inputs` when computed already."""
    out, grads = ours or value_and_grads(ssl_fast.siglip, *inputs, weight=weight)
    theirs, their_grads = value_and_grads(formula, *inputs, weight=weight)
    wide = [x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    ref, ref_grads = value_and_grads(formula, *wide, weight=weight)
    assert_accurate(out, theirs, ref, f"{what} loss", floor=floor)
    for k, (g, tg, rg) in enumerate(zip(grads, their_grads, ref_grads, strict=True)):
        relative = floor * rg.abs().max().item() / max(ref.item(), 1)
        assert_accurate(g, tg, rg, f"{what} grad {k}", floor=relative)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("n,d", SIZES, ids=str)
def test_matches_formula(n, d, dtype, gen):
    check_against_formula(towers(n, d, gen, dtype), f"siglip {n}x{d} {dtype}")


@pytest.mark.parametrize("scale,bias", [(1.0, 0.0), (10.0, -10.0), (100.0, 3.0), (-5.0, 2.0)], ids=str)
def test_scales_and_biases(scale, bias, gen):
    """Logits of either sign and far out in the tails of the sigmoid."""
    img, txt, _, _ = towers(300, 8, gen, torch.float32)
    inputs = (img, txt, torch.tensor(scale, requires_grad=True), torch.tensor(bias, requires_grad=True))
    check_against_formula(inputs, f"scale {scale} bias {bias}", floor=abs(scale) + abs(bias))


def test_grad_output_not_one(gen):
    check_against_formula(towers(270, 5, gen, torch.float32), "weighted", weight=0.37)


def test_non_contiguous_and_no_grad_side(gen):
    img = F.normalize(randn(260, 20, gen=gen), dim=1).float()[:, ::2]
    txt = F.normalize(randn(10, 260, gen=gen).T, dim=1).float().requires_grad_()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0, requires_grad=True)
    assert not img.is_contiguous() and not txt.is_contiguous()
    check_against_formula((img, txt, scale, bias), "strided")


def test_numbers_and_no_bias(gen):
    img, txt, _, _ = towers(30, 6, gen, torch.float64)
    ours = ssl_fast.siglip(img, txt, 10.0)
    torch.testing.assert_close(ours, formula(img, txt, torch.tensor(10.0), torch.tensor(0.0)))
    torch.testing.assert_close(ssl_fast.siglip(img, txt, 10.0, -3), ssl_fast.siglip(img, txt, 10.0, -3.0))
    # A one-element scale of shape [1] (some checkpoints) gets a gradient of its shape.
    scale = torch.tensor([10.0], dtype=torch.float64, requires_grad=True)
    ssl_fast.siglip(img, txt, scale, None).backward()
    assert scale.grad.shape == (1,)


def test_single_pair(gen):
    img, txt, scale, bias = towers(1, 5, gen)
    z = scale * (img * txt).sum() + bias
    torch.testing.assert_close(ssl_fast.siglip(img, txt, scale, bias), -F.logsigmoid(z))


def test_gradcheck(gen):
    img, txt, scale, bias = towers(5, 3, gen)
    scale, bias = (t.detach().div(4).requires_grad_() for t in (scale, bias))
    assert torch.autograd.gradcheck(ssl_fast.siglip, (img, txt, scale, bias))
    assert torch.autograd.gradgradcheck(ssl_fast.siglip, (img, txt, scale, bias))


def test_backward_op_recomputes(gen):
    """Without gradients saved by the forward (inputs that needed none then, a second
    backward), the backward op gives the same gradients."""
    img, txt, scale, bias = towers(300, 12, gen, torch.float32)
    loss = ssl_fast.siglip(img, txt, scale, bias)
    first = torch.autograd.grad(loss, (img, txt, scale, bias), retain_graph=True)
    second = torch.autograd.grad(loss, (img, txt, scale, bias))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


OPCHECK_MASKS = [(True, True, True, True), (True, False, False, False), (False, True, True, False)]


@pytest.mark.parametrize("mask", OPCHECK_MASKS, ids=str)
@pytest.mark.parametrize("offset", [0, 2], ids=lambda o: f"offset{o}")
def test_opcheck(mask, offset, gen):
    img, txt, scale, bias = towers(5, 3, gen, torch.float32, requires_grad=False)
    txt = torch.cat([txt, txt[:2]])  # more texts than images, as a rank of a gathered batch
    inputs = [t.clone().requires_grad_(m) for t, m in zip((img, txt, scale, bias), mask, strict=True)]
    torch.library.opcheck(ops.siglip, (*inputs, offset, [False] * 4))
    torch.library.opcheck(ops.siglip, (img, txt, scale, bias, offset, list(mask)))
    torch.library.opcheck(ops.siglip_backward, (torch.tensor(0.5), img, txt, scale, bias, offset, list(mask)))


def test_op_offset_matches_formula(gen):
    img, txt, scale, bias = towers(7, 4, gen, requires_grad=False)
    texts = torch.cat([txt, txt, txt])
    for offset in (0, 7, 14, 30):
        loss, *_ = ops.siglip(img, texts, scale, bias, offset, [False] * 4)
        torch.testing.assert_close(loss, reference.siglip_loss(img, texts, scale, bias, offset))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside torch's inductor
def test_torch_compile_fullgraph(gen):
    def f(img, txt, scale, bias):
        return ssl_fast.siglip(img, txt, scale.exp(), bias) * 2

    img, txt, scale, bias = towers(9, 5, gen, torch.float32)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    inputs = (img, txt, scale, bias)
    eager, eager_grads = value_and_grads(f, *inputs)
    comp, comp_grads = value_and_grads(torch.compile(f, fullgraph=True), *inputs)
    torch.testing.assert_close(comp, eager)
    torch.testing.assert_close(comp_grads, eager_grads)


def test_torch_backend_matches_kernel(monkeypatch, gen):
    inputs = towers(40, 6, gen, torch.float32)
    kernel = value_and_grads(ssl_fast.siglip, *inputs)
    monkeypatch.setenv("SSL_FAST_BACKEND", "torch")
    fallback = value_and_grads(ssl_fast.siglip, *inputs)
    torch.testing.assert_close(kernel, fallback)


def test_nan_feature_gives_nan(gen):
    img, txt, scale, bias = towers(20, 4, gen, torch.float32)
    poisoned = img.detach().clone()
    poisoned[3, 1] = float("nan")
    loss, grads = value_and_grads(ssl_fast.siglip, poisoned.requires_grad_(), txt, scale, bias)
    assert loss.isnan() and all(g.isnan().any() for g in grads)


# ----------------------------------------------------------------- errors


def test_bad_arguments(gen):
    z = randn(4, 3, gen=gen, dtype=torch.float32)
    s, inf, nan = torch.tensor(10.0), torch.tensor(math.inf), torch.tensor(math.nan)
    cases = [
        (lambda: ssl_fast.siglip(z, z[:3], s), ValueError, "same shape .* got \\(4, 3\\) and \\(3, 3\\)"),
        (lambda: ssl_fast.siglip(z[0], z[0], s), ValueError, "2-D \\[batch, features\\], got shape \\(3,\\)"),
        (lambda: ssl_fast.siglip(z[:0], z[:0], s), ValueError, "image_features is an empty batch"),
        (lambda: ssl_fast.siglip(z[:, :0], z[:, :0], s), ValueError, "has no features"),
        (lambda: ssl_fast.siglip(z.long(), z.long(), s), TypeError, "got dtype torch.int64"),
        (lambda: ssl_fast.siglip(z, z.to("meta"), s), ValueError, "text_features is on meta but image_"),
        (lambda: ssl_fast.siglip(z, z, inf), ValueError, "logit_scale must be finite, got inf"),
        (lambda: ssl_fast.siglip(z, z, s, nan), ValueError, "logit_bias must be finite, got nan"),
        (lambda: ssl_fast.siglip(z, z, math.nan), ValueError, "logit_scale must be finite, got nan"),
        (lambda: ssl_fast.siglip(z, z, torch.ones(2)), TypeError, "one-element floating-point tensor"),
        (lambda: ssl_fast.siglip(z, z, "10"), TypeError, "logit_scale must be a real number"),
        (lambda: ssl_fast.SigLipLoss(dist_impl="ring"), ValueError, "dist_impl must be one of"),
        (lambda: ssl_fast.SigLipLoss(rank=2, world_size=2), ValueError, "rank must be below world_size"),
        (lambda: ssl_fast.SigLipLoss(rank=1, world_size=2)(z, z, s, s), ValueError,
         "made for rank 1 of 2, but this process is rank 0 of 1"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_raw_op_errors(gen):
    q = randn(4, 3, gen=gen, dtype=torch.float32)
    s, b, no = torch.tensor(2.0), torch.tensor(0.0), [False] * 4
    cases = [
        ((q.int(), q, s, b, 0, no), "img must be float16, bfloat16, float32 or float64"),
        ((q, q[:, :2], s, b, 0, no), "img has 3 features but txt has 2"),
        ((q, q[:0], s, b, 0, no), "txt is an empty batch"),
        ((q, q.double(), s, b, 0, no), "txt dtype Double differs from img dtype Float"),
        ((q, q, torch.tensor(math.inf), b, 0, no), "scale must be finite, got inf"),
        ((q, q, s, torch.tensor(math.nan), 0, no), "bias must be finite, got nan"),
        ((q, q, torch.ones(2), b, 0, no), "scale must be a 0-dim floating-point tensor"),
        ((q, q, s, b, -1, no), "offset \\(the column of row 0's positive\\) must be >= 0, got -1"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            ops.siglip(*args)
    with pytest.raises(RuntimeError, match="grad must be a 0-dim floating-point tensor"):
        ops.siglip_backward(torch.ones(2), q, q, s, b, 0, [True] * 4)


# ----------------------------------------------------------------- open_clip


def _open_clip_siglip():
    """open_clip's SigLipLoss class. Its loss module needs only torch, but its package imports
    torchvision and more: the module is loaded from its file alone."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip_torch is not installed")
    path = f"{spec.submodule_search_locations[0]}/loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SigLipLoss


@pytest.mark.parametrize("n,d", [(1, 8), (13, 8), (300, 32)], ids=str)
def test_matches_open_clip_float64(n, d, gen):
    """Values and gradients (features, scale, bias) of open_clip's SigLipLoss, in float64."""
    OpenClipSigLip = _open_clip_siglip()
    inputs = towers(n, d, gen)
    ours, ours_grads = value_and_grads(ssl_fast.SigLipLoss(), *inputs)
    theirs, their_grads = value_and_grads(OpenClipSigLip(), *inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    for got, want in zip(ours_grads, their_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13)
    assert ssl_fast.SigLipLoss()(*inputs, output_dict=True).keys() == {"contrastive_loss"}


def test_matches_open_clip_float32_module(gen):
    OpenClipSigLip = _open_clip_siglip()
    img, txt, _, _ = towers(64, 16, gen, torch.float32)
    scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    bias = torch.nn.Parameter(torch.tensor(-10.0))
    ours = ssl_fast.SigLipLoss()(img, txt, scale.exp(), bias)
    theirs = OpenClipSigLip()(img, txt, scale.exp(), bias)
    torch.testing.assert_close(ours, theirs)


# ----------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("n,d", SIZES, ids=str)
def test_cuda_matches_formula(n, d, dtype, gen, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    img, txt, scale, bias = towers(n, d, gen, dtype)
    inputs = [t.detach().cuda().requires_grad_() for t in (img, txt, scale, bias)]
    check_against_formula(inputs, f"cuda siglip {n}x{d} {dtype}", weight=0.5)


@requires_cuda
def test_cuda_matches_cpu_and_repeats(gen, monkeypatch):
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    img, txt, scale, bias = towers(300, 24, gen, torch.float64, requires_grad=False)
    texts = torch.cat([txt, txt[:50]])
    args = (img, texts, scale, bias, 11, [True] * 4)
    cpu = ops.siglip(*args)
    runs = [ops.siglip(*(t.cuda() if isinstance(t, torch.Tensor) else t for t in args)) for _ in range(2)]
    for got, again, want in zip(*runs, cpu, strict=True):
        assert torch.equal(got, again)
        torch.testing.assert_close(got.cpu(), want)


def cuda_towers(n: int, d: int, gen, dtype):
    """towers() on the GPU: features, and a learnable scale and bias, all requiring gradients."""
    return [t.detach().cuda().requires_grad_() for t in towers(n, d, gen, dtype)]


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_no_host_sync_learnable(dtype, gen, monkeypatch):
    """Forward and backward (grad_output != 1) with the scale and bias on the GPU never make
    the host wait, and match the formula."""
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    inputs = cuda_towers(300, 24, gen, dtype)
    value_and_grads(ssl_fast.siglip, *inputs)  # warm-up: first calls initialise cuBLAS
    with host_sync_forbidden():
        ours = value_and_grads(ssl_fast.siglip, *inputs, weight=0.5)
    check_against_formula(inputs, f"cuda no sync {dtype}", weight=0.5, ours=ours)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_no_host_sync_numbers(dtype, gen, monkeypatch):
    """The same with a plain float scale and bias (CPU values, read on the host for free)."""
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    img, txt, _, _ = cuda_towers(300, 24, gen, dtype)

    def loss(img, txt):
        return ssl_fast.siglip(img, txt, 10.0, -10.0)

    value_and_grads(loss, img, txt)
    with host_sync_forbidden():
        ours = value_and_grads(loss, img, txt, weight=0.5)
    inputs = (img, txt, torch.tensor(10.0), torch.tensor(-10.0))
    check_against_formula(inputs, f"cuda no sync numbers {dtype}", weight=0.5, ours=ours)


@requires_cuda
def test_cuda_backward_grad_scales_gradients(gen, monkeypatch):
    """loss.backward(g) with g a CUDA tensor gives g times the gradients of loss.backward(),
    without the host waiting."""
    monkeypatch.setenv("SSL_FAST_BACKEND", "ext")
    inputs = cuda_towers(260, 16, gen, torch.float32)
    ssl_fast.siglip(*inputs).backward()
    plain = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    with host_sync_forbidden():
        ssl_fast.siglip(*inputs).backward(torch.tensor(2.0, device="cuda"))
    for t, want in zip(inputs, plain, strict=True):
        torch.testing.assert_close(t.grad, 2 * want, rtol=1e-5, atol=1e-7)


@requires_cuda
def test_cuda_backward_op_grad_on_cpu_or_device(gen):
    """The backward op takes its incoming gradient on the CPU or the GPU, with the same bits
    and without the host waiting."""
    img, txt, scale, bias = (t.detach().cuda() for t in towers(100, 8, gen, torch.float32))
    mask = [True] * 4
    ops.siglip_backward(torch.tensor(0.5, device="cuda"), img, txt, scale, bias, 0, mask)
    with host_sync_forbidden():
        on_cpu = ops.siglip_backward(torch.tensor(0.5), img, txt, scale, bias, 0, mask)
        on_gpu = ops.siglip_backward(torch.tensor(0.5, device="cuda"), img, txt, scale, bias, 0, mask)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert a.device == b.device == img.device
        assert torch.equal(a, b)


@requires_cuda
def test_cuda_grad_on_another_device(gen):
    img, txt, scale, bias = towers(5, 3, gen, torch.float32, requires_grad=False)
    with pytest.raises(RuntimeError, match="grad is on cuda:0 but img is on cpu"):
        ops.siglip_backward(torch.tensor(0.5, device="cuda"), img, txt, scale, bias, 0, [True] * 4)


@requires_cuda
def test_cuda_graph_capture(gen):
    """The forward and backward ops can be captured in a CUDA graph, and a replay reads the
    scale, bias and incoming gradient as they are then, not as they were at capture."""
    img, txt, scale, bias = (t.detach().cuda() for t in towers(300, 16, gen, torch.float32))
    grad = torch.tensor(1.0, device="cuda")
    mask = [True] * 4

    def step():
        forward = ops.siglip(img, txt, scale, bias, 0, mask)
        return (*forward, *ops.siglip_backward(grad, img, txt, scale, bias, 0, mask))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graph asks
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for values in [(10.0, -10.0, 1.0), (3.0, 1.5, 0.25)]:
        for t, v in zip((scale, bias, grad), values, strict=True):
            t.fill_(v)
        graph.replay()
        for got, want in zip(captured, step(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
