"""The token decoder that both URI and the two-stage generative baselines train: given a query's or an
item's features and the tokens of the layers before, a distribution over the next layer's tokens.

Input sequence: [f, f + t_1, ..., f + t_{l-1}] where f, the feature token, is the side's feature vector
through that side's input projection (query and item each have one: they are the decoder's ends of the
two encoders), and t_i are token embeddings, one table per layer. A small causal Transformer reads it;
the output at position l-1 goes through layer l's head to `sizes[l-1]` logits. One forward pass with
every assigned token as input gives the distributions of all layers at once (teacher forcing).

Shapes: B rows, L layers, d dims.
"""

from __future__ import annotations

import torch
from torch import nn


def _input_projection(feature_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(feature_dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim))


class TokenDecoder(nn.Module):
    def __init__(self, feature_dim: int, sizes: list[int], dim: int = 64, blocks: int = 2, heads: int = 2):
        super().__init__()
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every layer needs at least one token, got sizes {sizes}")
        self.sizes = list(sizes)
        # Each input ends in a LayerNorm and the position and token embeddings start small: with
        # PyTorch's N(0, 1) embedding initialisation the position vector outweighed the features by ~10x,
        # every item got the same distribution, and the first layer collapsed onto one token.
        self.query_input = _input_projection(feature_dim, dim)
        self.item_input = _input_projection(feature_dim, dim)
        self.token_embeddings = nn.ModuleList(nn.Embedding(size, dim) for size in sizes)
        self.positions = nn.Embedding(len(sizes), dim)
        for table in [*self.token_embeddings, self.positions]:
            nn.init.normal_(table.weight, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=dim * 4, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, size) for size in sizes)

    @property
    def layers(self) -> int:
        return len(self.sizes)

    def encode(self, features: torch.Tensor, side: str) -> torch.Tensor:
        """(B, feature_dim) -> (B, d) the feature token of the query or item side."""
        return (self.query_input if side == "query" else self.item_input)(features)

    def logits(
        self, start: torch.Tensor, prefix: torch.Tensor, depth: int | None = None
    ) -> list[torch.Tensor]:
        """Logits of layers 1..depth given the feature token `start` (B, d) and the tokens `prefix`
        (B, >= depth - 1) of the layers before; returns a list of (B, sizes[l]) tensors."""
        depth = self.layers if depth is None else depth
        parts = [start.unsqueeze(1)]
        for layer in range(depth - 1):
            # Every position also carries the features: through attention alone, the items under one
            # parent started a new layer with the same distribution and never parted (it stayed uniform).
            parts.append((self.token_embeddings[layer](prefix[:, layer]) + start).unsqueeze(1))
        hidden = torch.cat(parts, 1) + self.positions.weight[:depth].unsqueeze(0)  # (B, depth, d)
        causal = torch.triu(torch.ones(depth, depth, dtype=torch.bool, device=hidden.device), 1)
        for block in self.blocks:
            hidden = block(hidden, src_mask=causal, is_causal=True)
        hidden = self.norm(hidden)
        return [self.heads[layer](hidden[:, layer]) for layer in range(depth)]

    def next_log_probs(self, start: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """(B, d) feature tokens and (B, l) prefixes -> (B, sizes[l]) log-probabilities of token l + 1."""
        depth = prefix.shape[1] + 1
        return torch.log_softmax(self.logits(start, prefix, depth)[-1], -1)
