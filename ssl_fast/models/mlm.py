"""A small Transformer encoder for masked language modelling, with tied input and output
embeddings, trained with ssl_fast.mlm_loss (logits only for the masked positions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.mlm_loss import mlm_loss


class _Block(nn.Module):
    """Pre-norm Transformer block on torch's scaled-dot-product attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask, self.dropout if self.training else 0.0)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class MaskedLanguageModel(nn.Module):
    """Token and position embeddings, `layers` pre-norm blocks, a final LayerNorm and an LM
    head whose weight is the token embedding (tied). forward(input_ids, attention_mask) gives
    hidden states [B, L, dim]; loss(input_ids, labels, attention_mask) the MLM loss."""

    def __init__(
        self, vocab_size: int, dim: int = 256, layers: int = 4, heads: int = 4, max_length: int = 512,
        mlp_ratio: int = 4, dropout: float = 0.1,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"MaskedLanguageModel: dim {dim} must be a multiple of heads {heads}")
        self.max_length = max_length
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"MaskedLanguageModel: sequences of {input_ids.shape[1]} tokens exceed max_length "
                f"{self.max_length}"
            )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tokens(input_ids) + self.positions(positions)
        # Padding keys get no attention: a [B, 1, 1, L] boolean mask, True where attended.
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full [B, L, vocab] logits (for inspection; training uses loss())."""
        return F.linear(self(input_ids, attention_mask), self.tokens.weight, self.head_bias)

    def loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy over the positions with labels != -100, projected alone."""
        return mlm_loss(self(input_ids, attention_mask), self.tokens.weight, labels, self.head_bias)
