"""Masked-language-modelling loss that projects only the masked positions onto the vocabulary.

With 15% of the tokens masked, cross-entropy over full logits computes (and keeps for the
backward) [B, L, V] logits of which 85% are ignored. Gathering the masked hidden states
first makes the projection, the softmax and their memory ~7x smaller, with the same value
and gradients. It is a composition of PyTorch ops and needs no kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mlm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of the positions with labels != -100.

    hidden: [..., H] final hidden states; weight: [V, H] LM-head weight; bias: optional [V];
    labels: [...] int64 targets in [0, V) or -100. Equal in value and gradients to
    F.cross_entropy(hidden @ weight.T + bias, labels, ignore_index=-100) over full logits
    (NaN when nothing is masked, as there).
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(
            f"mlm_loss: hidden of shape {tuple(hidden.shape)} needs labels of shape "
            f"{tuple(hidden.shape[:-1])}, got {tuple(labels.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"mlm_loss: weight must have shape [V, {hidden.shape[-1]}], got {tuple(weight.shape)}"
        )
    labels = labels.reshape(-1)
    selected = (labels != IGNORE_INDEX).nonzero().squeeze(1)
    logits = F.linear(hidden.reshape(-1, hidden.shape[-1]).index_select(0, selected), weight, bias)
    return F.cross_entropy(logits, labels.index_select(0, selected))
