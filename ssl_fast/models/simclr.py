"""SimCLR: any backbone plus a projection head, trained with the fused NT-Xent loss."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.contrastive import nt_xent
from .grad_cache import chunked_backward


class SimCLR(nn.Module):
    """backbone: a module mapping a batch to [B, feature_dim] features (the representation
    kept after training). The projection head is Linear-BatchNorm-ReLU-Linear to
    out_dim; the NT-Xent loss is computed on its outputs.

    gather_distributed: contrast against the embeddings of every rank (ssl_fast.nt_xent).
    head_norm: batch norm in the projection head (off for exact chunked gradients).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        hidden_dim: int = 512,
        out_dim: int = 128,
        temperature: float = 0.5,
        gather_distributed: bool = False,
        head_norm: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.BatchNorm1d(hidden_dim) if head_norm else nn.Identity(),
            nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim),
        )
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The representation: backbone features [B, feature_dim]."""
        return self.backbone(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections [B, out_dim]."""
        return self.projection(self.encode(x))

    def loss(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        """NT-Xent of two augmented views of the same batch; both go through the model in one
        forward, so that batch-norm statistics (and DDP) see the whole batch once."""
        z0, z1 = self(torch.cat([view0, view1])).chunk(2)
        return nt_xent(z0, z1, self.temperature, gather_distributed=self.gather_distributed)

    def backward_chunked(self, view0: torch.Tensor, view1: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """The NT-Xent step in chunks of chunk_size images (gradient caching,
        ssl_fast.models.chunked_backward): accumulates the parameter gradients and returns the
        loss, detached. The contrastive batch is then bounded by the loss's O(N D) memory,
        not by the activations of the whole batch."""
        return chunked_backward(
            self, [view0, view1],
            lambda z0, z1: nt_xent(z0, z1, self.temperature, gather_distributed=self.gather_distributed),
            chunk_size,
        )
