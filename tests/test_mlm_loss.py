"""ssl_fast.mlm_loss against cross-entropy over full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ssl_fast


def full_loss(hidden, weight, labels, bias=None):
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shape", [(4, 33), (1, 1), (7,)], ids=str)
def test_value_and_gradients(with_bias, shape):
    gen = torch.Generator().manual_seed(0)
    vocab, dim = 50, 16
    hidden = torch.randn(*shape, dim, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, dim, generator=gen, dtype=torch.float64)
    bias = torch.randn(vocab, generator=gen, dtype=torch.float64) if with_bias else None
    labels = torch.randint(vocab, shape, generator=gen)
    labels[torch.rand(shape, generator=gen) < 0.85] = -100
    labels.view(-1)[0] = 3  # at least one masked position
    leaves = [t for t in (hidden, weight, bias) if t is not None]
    results = []
    for fn in (ssl_fast.mlm_loss, full_loss):
        inputs = [t.clone().requires_grad_() for t in leaves]
        loss = fn(inputs[0], inputs[1], labels, inputs[2] if with_bias else None)
        results.append((loss, torch.autograd.grad(loss * 1.7, inputs)))
    (ours, our_grads), (theirs, their_grads) = results
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_nothing_masked_is_nan_as_cross_entropy():
    hidden, weight = torch.randn(2, 3, 4), torch.randn(10, 4)
    labels = torch.full((2, 3), -100)
    assert ssl_fast.mlm_loss(hidden, weight, labels).isnan() and full_loss(hidden, weight, labels).isnan()


def test_bfloat16_matches_full_logits_in_bfloat16():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(8, 64, 32, generator=gen).bfloat16()
    weight = torch.randn(100, 32, generator=gen).bfloat16()
    labels = torch.randint(100, (8, 64), generator=gen)
    labels[torch.rand(8, 64, generator=gen) < 0.85] = -100
    torch.testing.assert_close(ssl_fast.mlm_loss(hidden, weight, labels), full_loss(hidden, weight, labels))


def test_errors():
    with pytest.raises(ValueError, match=r"needs labels of shape \(2, 3\), got \(2, 4\)"):
        ssl_fast.mlm_loss(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight must have shape \[V, 4\], got \(5, 3\)"):
        ssl_fast.mlm_loss(torch.zeros(2, 3, 4), torch.zeros(5, 3), torch.zeros(2, 3, dtype=torch.long))
