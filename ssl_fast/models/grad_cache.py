"""Large-batch contrastive steps in chunks (gradient caching, as in GradCache).

The encoder first embeds the whole batch chunk by chunk without keeping activations; the
fused loss then gives the loss and its gradient with respect to every embedding at once
(O(N D) memory); finally each chunk is embedded again, with its graph, and back-propagated
with its cached embedding gradient. The batch is then bounded by the loss's memory, not by
the encoder's activations. The random state is replayed per chunk, so dropout and random
augmentation inside `encode` draw the same numbers in both passes, and the parameter
gradients equal those of the plain full-batch step (layers that mix samples, such as
batch norm in training mode, see one chunk at a time instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _rng_states(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states: tuple, device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def chunked_backward(
    encode: Callable[[torch.Tensor], torch.Tensor],
    views: Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    chunk_size: int,
) -> torch.Tensor:
    """loss_fn(encode(views[0]), encode(views[1]), ...) with its gradient accumulated into the
    parameters of `encode`, holding the activations of one chunk at a time. Returns the
    loss, detached."""
    if chunk_size < 1:
        raise ValueError(f"chunked_backward: chunk_size must be >= 1, got {chunk_size}")
    # Balanced chunks of at most chunk_size: 65 images in chunks of 64 run as 33 + 32, not as
    # 64 + 1 (a lone image costs a whole pass and fails in a training-mode batch norm).
    count = -(-len(views[0]) // chunk_size)
    chunks = [view.tensor_split(count) for view in views]
    states: list[list[tuple]] = []
    embeddings = []
    with torch.no_grad():
        for view_chunks in chunks:
            view_states, parts = [], []
            for chunk in view_chunks:
                view_states.append(_rng_states(chunk.device))
                parts.append(encode(chunk))
            states.append(view_states)
            embeddings.append(torch.cat(parts).requires_grad_())
    loss = loss_fn(*embeddings)
    grads = torch.autograd.grad(loss, embeddings)
    after = _rng_states(views[0].device)
    for view_chunks, view_states, grad in zip(chunks, states, grads, strict=True):
        for chunk, state, chunk_grad in zip(view_chunks, view_states, grad.tensor_split(count), strict=True):
            _set_rng_states(state, chunk.device)
            encode(chunk).backward(chunk_grad)
    _set_rng_states(after, views[0].device)  # as if each chunk had been drawn once
    return loss.detach()
