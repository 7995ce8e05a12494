"""The URI model (and the two-stage generative baselines, which share it): encoders, one token decoder
that is both indexer and retriever, the items' assigned tokens, and an inner-product ranker.

Parts:
- `router`: the query encoder (SASRec over the user's recent items) and item encoder (ID + content)
  whose vectors are the decoder's inputs. They start from a trained two-tower model and stay fixed while
  the decoder learns (our choice, see `uri_train`);
- `decoder`: a `TokenDecoder` whose query end and item end read those vectors; the item end also adds a
  per-item ID embedding of the decoder's own (`item_ids`), so the M-step can move any item to any
  token, as an item encoder with an ID embedding can in the paper;
- `item_codes`: the tokens assigned to every item, layer by layer (-1 before assignment);
- `ranker`: two towers scored by inner product, trained after the index with sampled softmax (URI 4.3).

Vectors. The index contract hands a backend one vector per query and per item, and the bundle's exact
search is an inner product, so URI's vectors are laid out in three blocks of d:

    query = [ ranker user vector | router user vector |          0          ]
    item  = [ ranker item vector |          0         | router item vector  ]

Their inner product is the ranker's score alone (exact search and evaluation see exactly the ranker),
while the URI index reads the router blocks: the query's for the beam search, a new item's for its codes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recindex.errors import RecIndexError
from recindex.models.two_tower import TwoTowerModel, TwoTowerShape
from recindex.uri.decoder import TokenDecoder


@dataclass(frozen=True)
class URIShape(TwoTowerShape):
    """The towers' shape plus the decoder's tokens per layer (a two-stage baseline's last layer tells
    apart the items of one leaf, so its size depends on the index: it has to be saved)."""

    token_sizes: list[int] = field(default_factory=list)


class URIModel(nn.Module):
    def __init__(self, router: TwoTowerModel, token_sizes: list[int], blocks: int = 2, heads: int = 2):
        super().__init__()
        self.router = router
        self.ranker = copy.deepcopy(router)
        self.config = router.config
        self.n_items = router.n_items
        self.temperature = router.temperature
        dim = router.config.dim
        self.shape = URIShape(**{**router.shape.__dict__, "token_sizes": list(token_sizes)})
        self.decoder = TokenDecoder(dim, list(token_sizes), dim=dim, blocks=blocks, heads=heads)
        self.item_ids = nn.Embedding(router.n_items + 1, dim)
        nn.init.zeros_(self.item_ids.weight)  # an item starts where its router vector puts it
        self.register_buffer(
            "item_codes",
            torch.full((router.n_items, len(token_sizes)), -1, dtype=torch.long),
            persistent=True,
        )

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def output_dim(self) -> int:
        return 3 * self.config.dim

    def set_trained_items(self, mask: np.ndarray) -> None:
        self.router.set_trained_items(mask)
        self.ranker.set_trained_items(mask)

    def assigned_layers(self) -> int:
        """How many layers every item has a token for."""
        assigned = (self.item_codes >= 0).all(0)
        return int(assigned.cumprod(0).sum())

    # ---- the decoder's inputs ------------------------------------------------------------------------

    def item_features(self, items: torch.Tensor) -> torch.Tensor:
        """(B,) items -> (B, d) the decoder's item-end input: router vector + the decoder's ID embedding."""
        with torch.no_grad():
            vectors = self.router.item_vectors(items)
        return vectors + self.item_ids(items)

    # ---- the vectors that exact search and the index see ---------------------------------------------

    def user_states(self, sequences, lengths, users=None, id_keep=None) -> torch.Tensor:
        """(B, L) sequences -> (B, L, 3d) the query vector after each position (see the module doc)."""
        ranker = self.ranker.user_states(sequences, lengths, users, id_keep)
        router = self.router.user_states(sequences, lengths, users)
        return torch.cat([ranker, router, torch.zeros_like(router)], -1)

    def user_vectors(self, sequences, lengths, users=None) -> torch.Tensor:
        states = self.user_states(sequences, lengths, users)
        last = (lengths - 1).clamp(min=0)
        return states[torch.arange(len(lengths), device=states.device), last]

    def item_vectors(self, items: torch.Tensor | None = None, id_keep=None) -> torch.Tensor:
        if items is None:
            items = torch.arange(self.n_items, device=self.item_codes.device)
        ranker = self.ranker.item_vectors(items, id_keep)
        router = self.router.item_vectors(items)
        return torch.cat([ranker, torch.zeros_like(router), router], -1)

    def content_vectors(self, token_lists: list[list[int]]) -> torch.Tensor:
        ranker = self.ranker.content_vectors(token_lists)
        router = self.router.content_vectors(token_lists)
        return torch.cat([ranker, torch.zeros_like(router), router], -1)


def split_query(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3d) query vectors -> (ranker part, router part)."""
    return vectors[:, :dim], vectors[:, dim : 2 * dim]


def router_of_items(vectors: np.ndarray, dim: int) -> np.ndarray:
    """(n, 3d) item vectors -> (n, d) their router part (the decoder's item-end input)."""
    return vectors[:, 2 * dim :]


def uri_model(router: TwoTowerModel, config, token_sizes: list[int] | None = None) -> URIModel:
    """The URI model of a `[uri]` config section around the router towers."""
    if config.k < 2 or config.layers < 1:
        raise RecIndexError(
            f"uri.k must be >= 2 and uri.layers >= 1, got k={config.k}, layers={config.layers}"
        )
    sizes = token_sizes or [config.k] * config.layers
    return URIModel(router, sizes, blocks=config.decoder_blocks)
