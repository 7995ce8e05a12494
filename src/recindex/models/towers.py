"""The two towers: an item tower (ID + attribute bag) and user-sequence encoders (SASRec, mean pooling).

Shapes: B users, L positions, d dims, T attribute tokens per item, N items.
Padding: sequences are right-padded with the index `n_items`, so every real position attends only to
real positions under the causal mask (left padding gives fully masked rows, NaN, and poisoned layers).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recindex.data.interactions import ItemFeatures

MAX_TOKENS_PER_ITEM = 64  # attribute bags are truncated to this many tokens


def padded_tokens(features: ItemFeatures, n_items: int) -> np.ndarray:
    """(N + 1, T) token matrix padded with `n_tokens`; the extra row is the padding item."""
    lengths = np.minimum(np.diff(features.offsets), MAX_TOKENS_PER_ITEM)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    table = np.full((n_items + 1, width), features.n_tokens, np.int64)
    for item in np.flatnonzero(lengths):
        tokens = features.of(int(item))[:width]
        table[item, : len(tokens)] = tokens
    return table


class ItemTower(nn.Module):
    """Item representation = ID embedding + mean of attribute-token embeddings.

    An item never seen in training (`trained` is False) has an untrained ID embedding, so it is left out
    and the item is represented by its content alone; `id_dropout` trains that content-only path.
    """

    def __init__(self, n_items: int, dim: int, tokens: np.ndarray | None, n_tokens: int):
        super().__init__()
        self.n_items = n_items
        self.ids = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        nn.init.normal_(self.ids.weight, std=1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.ids.weight[n_items].zero_()
        self.attributes = None
        if tokens is not None:
            self.attributes = nn.EmbeddingBag(n_tokens + 1, dim, mode="mean", padding_idx=n_tokens)
            nn.init.normal_(self.attributes.weight, std=1.0 / math.sqrt(dim))
            self.register_buffer("tokens", torch.as_tensor(tokens), persistent=True)
        self.register_buffer("trained", torch.ones(n_items + 1, dtype=torch.bool), persistent=True)

    def forward(self, items: torch.Tensor, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Raw (unnormalised) representation of `items` (any shape) -> (*items.shape, d)."""
        keep = self.trained[items]
        if id_keep is not None:
            keep = keep & id_keep[items]
        vectors = self.ids(items) * keep.unsqueeze(-1)
        if self.attributes is not None:
            flat = items.reshape(-1)
            bags = self.attributes(self.tokens[flat]).reshape(*items.shape, -1)
            vectors = vectors + bags
        return vectors


class CausalSelfAttentionEncoder(nn.Module):
    """SASRec-style encoder: learned positions, pre-LayerNorm causal Transformer blocks."""

    def __init__(self, dim: int, max_len: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=dim * 4,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, length, dim = inputs.shape  # (B, L, d)
        positions = torch.arange(length, device=inputs.device)
        hidden = self.dropout(inputs * math.sqrt(dim) + self.positions(positions))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=inputs.device), 1)
        for block in self.blocks:
            hidden = block(hidden, src_mask=causal, is_causal=True)
        # Right padding + causal mask: real positions never see padding, so no key-padding mask is
        # needed and no row is fully masked. Padded positions are ignored by the callers.
        return self.norm(hidden)


class MeanPoolEncoder(nn.Module):
    """Mean of the items seen so far at each position (causal), then a small MLP."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, inputs.shape[1] + 1, device=inputs.device, dtype=inputs.dtype)
        running_mean = inputs.cumsum(dim=1) / counts.view(1, -1, 1)  # (B, L, d)
        return running_mean + self.mlp(running_mean)


class UserFeatureEmbedding(nn.Module):
    """Sum of one embedding per categorical user field (code 0 = unknown)."""

    def __init__(self, codes: np.ndarray, cardinalities: list[int], dim: int):
        super().__init__()
        self.register_buffer("codes", torch.as_tensor(codes, dtype=torch.long), persistent=True)  # (U, F)
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        codes = self.codes[users]  # (B, F)
        return sum(table(codes[:, f]) for f, table in enumerate(self.tables))


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-12)
