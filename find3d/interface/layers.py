"""One FIND interface layer: content attention -> condition attention -> FFN.

Pre-norm (LayerNorm inside each residual branch, a final norm before the heads): the interface is
trained from scratch on frozen features with deep supervision on every layer, and pre-norm keeps
an un-normalised residual path from every head back to the first layer, which trains stably at
lr 1e-4 without warm-up; post-norm (Mask2Former's default) needs more care for that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedAttention(nn.Module):
    """Multi-head attention taking a boolean ``allowed`` mask ``(B, Q, K)`` (True = may attend)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden_dim {dim} must be divisible by num_heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=dropout)
        return self.out(out.transpose(1, 2).flatten(2))


class ContentAttention(MaskedAttention):
    """Queries read [image memory, prompt tokens]; the memory has its own key / value projections
    from the pixel decoder's narrow width, with positions added in key space."""

    def __init__(self, dim: int, memory_dim: int, heads: int, dropout: float) -> None:
        super().__init__(dim, heads, dropout)
        self.k_memory = nn.Linear(memory_dim, dim)
        self.v_memory = nn.Linear(memory_dim, dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, prompts: torch.Tensor,
                allowed: torch.Tensor) -> torch.Tensor:
        keys = torch.cat([self.k_memory(memory) + memory_pos, self.k(prompts)], dim=1)
        values = torch.cat([self.v_memory(memory), self.v(prompts)], dim=1)
        q = self._split(self.q(query))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, self._split(keys), self._split(values), attn_mask=allowed[:, None],
                                             dropout_p=dropout)
        return self.out(out.transpose(1, 2).flatten(2))


class InterfaceLayer(nn.Module):
    """Queries read prompts (content), then prompts and queries exchange (condition), then FFN."""

    def __init__(self, dim: int, memory_dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.content = ContentAttention(dim, memory_dim, heads, dropout)
        self.condition = MaskedAttention(dim, heads, dropout)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_prompt = nn.LayerNorm(dim)
        self.norm_condition = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim), nn.Dropout(dropout))

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        content_allowed: torch.Tensor,
        condition_allowed: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``queries (B,Q,D)``, ``tokens (B,T,D)`` non-image prompts, ``memory (B,HW,C)`` image level.

        ``content_allowed``: ``(B, Q, HW+T)``; ``condition_allowed``: ``(B, T+Q, T+Q)`` over [tokens, queries].
        Returns updated ``(queries, tokens)``.
        """
        prompts = self.norm_prompt(tokens)
        queries = queries + self.content(self.norm_query(queries), memory, memory_pos, prompts, content_allowed)
        sequence = torch.cat([tokens, queries], dim=1)
        normed = self.norm_condition(sequence)
        sequence = sequence + self.condition(normed, normed, normed, condition_allowed)
        sequence = sequence + self.ffn(self.norm_ffn(sequence))
        return sequence[:, tokens.shape[1]:], sequence[:, : tokens.shape[1]]
