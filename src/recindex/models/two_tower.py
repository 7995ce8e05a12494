"""Two-tower retrieval model: a user tower over the last `max_len` items and an item tower.

Both towers output L2-normalised vectors; the score is their inner product divided by a temperature.
The user tower reads items through the item tower (shared embeddings, as in SASRec), so content
features reach both sides and a new item is represented the same way as a query input and as a target.

Run it: `recindex train --config configs/beauty_two_tower.toml --out runs/beauty`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recindex.config import ModelConfig
from recindex.data.interactions import Interactions
from recindex.errors import BundleError, RecIndexError
from recindex.models.towers import (
    CausalSelfAttentionEncoder,
    ItemTower,
    MeanPoolEncoder,
    UserFeatureEmbedding,
    l2_normalize,
    padded_tokens,
)


@dataclass(frozen=True)
class TwoTowerShape:
    """What the model's tensors are sized by; saved in the bundle so weights can be loaded back."""

    n_items: int
    n_users: int
    n_tokens: int = 0
    token_width: int = 0
    user_cardinalities: list[int] = field(default_factory=list)


class TwoTowerModel(nn.Module):
    def __init__(
        self,
        shape: TwoTowerShape,
        config: ModelConfig,
        tokens: np.ndarray | None = None,
        user_codes: np.ndarray | None = None,
    ):
        super().__init__()
        if config.encoder not in ("sasrec", "mean"):
            raise RecIndexError(f"model.encoder must be 'sasrec' or 'mean', got {config.encoder!r}")
        if config.dim % config.heads:
            raise RecIndexError(f"model.dim ({config.dim}) must be divisible by model.heads ({config.heads})")
        self.shape, self.config = shape, config
        self.n_items = shape.n_items
        self.temperature = config.temperature
        if tokens is None and shape.token_width:
            tokens = np.full((shape.n_items + 1, shape.token_width), shape.n_tokens, np.int64)
        self.item_tower = ItemTower(shape.n_items, config.dim, tokens, shape.n_tokens)
        if config.encoder == "sasrec":
            self.encoder = CausalSelfAttentionEncoder(
                config.dim, config.max_len, config.layers, config.heads, config.dropout
            )
        else:
            self.encoder = MeanPoolEncoder(config.dim, config.dropout)
        self.user_features = None
        if shape.user_cardinalities:
            if user_codes is None:
                user_codes = np.zeros((shape.n_users, len(shape.user_cardinalities)), np.int64)
            self.user_features = UserFeatureEmbedding(user_codes, shape.user_cardinalities, config.dim)

    @staticmethod
    def for_data(data: Interactions, config: ModelConfig) -> TwoTowerModel:
        tokens = None
        if config.item_features and data.item_features is not None and data.item_features.n_tokens:
            tokens = padded_tokens(data.item_features, data.n_items)
        codes, cardinalities = None, []
        if config.user_features and data.user_features is not None and data.user_features.codes:
            fields = sorted(data.user_features.codes)
            codes = np.stack([data.user_features.codes[f] for f in fields], axis=1)
            cardinalities = [len(data.user_features.vocab[f]) for f in fields]
        shape = TwoTowerShape(
            n_items=data.n_items,
            n_users=data.n_users,
            n_tokens=data.item_features.n_tokens if tokens is not None else 0,
            token_width=tokens.shape[1] if tokens is not None else 0,
            user_cardinalities=cardinalities,
        )
        return TwoTowerModel(shape, config, tokens, codes)

    def set_trained_items(self, mask: np.ndarray) -> None:
        """Mark which items had training data; the others are encoded from content alone."""
        trained = torch.ones(self.n_items + 1, dtype=torch.bool)
        trained[: self.n_items] = torch.as_tensor(mask)
        self.item_tower.trained.copy_(trained)

    def item_vectors(self, items: torch.Tensor | None = None, id_keep: torch.Tensor | None = None):
        """L2-normalised item vectors for `items` (default: the whole catalogue) -> (..., d)."""
        if items is None:
            items = torch.arange(self.n_items, device=self.item_tower.trained.device)
        return l2_normalize(self.item_tower(items, id_keep))

    def content_vectors(self, token_lists: list[list[int]]) -> torch.Tensor:
        """L2-normalised vectors of items known only by their attribute tokens (new items) -> (n, d).

        The same content-only path that cold items take (their ID embedding is untrained and left out).
        """
        return l2_normalize(content_bags(self.item_tower, token_lists))

    def user_states(
        self,
        sequences: torch.Tensor,
        lengths: torch.Tensor,
        users: torch.Tensor | None = None,
        id_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) right-padded item sequences -> (B, L, d) normalised user vector after each position."""
        hidden = self.encoder(self.item_tower(sequences, id_keep), lengths)
        if self.user_features is not None and users is not None:
            hidden = hidden + self.user_features(users).unsqueeze(1)
        return l2_normalize(hidden)

    def user_vectors(self, sequences: torch.Tensor, lengths: torch.Tensor, users: torch.Tensor | None = None):
        """(B, L) right-padded sequences -> (B, d): the user vector after the last real item."""
        states = self.user_states(sequences, lengths, users)
        last = (lengths - 1).clamp(min=0)
        return states[torch.arange(len(lengths), device=states.device), last]


def content_bags(tower: ItemTower, token_lists: list[list[int]]) -> torch.Tensor:
    """(n, d) raw content representation (mean of attribute-token embeddings) of token lists."""
    if tower.attributes is None:
        raise ValueError("this model has no item attributes, so it cannot encode items by content")
    pad = tower.attributes.padding_idx
    lengths = np.fromiter((len(t) for t in token_lists), np.int64, len(token_lists))
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    # One scatter of all tokens into the padded table, not one copy per row: exports encode millions.
    flat = np.fromiter(itertools.chain.from_iterable(token_lists), np.int64, int(lengths.sum()))
    rows = np.repeat(np.arange(len(lengths)), lengths)
    columns = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    table = np.full((len(lengths), width), pad, np.int64)
    table[rows, columns] = flat
    return tower.attributes(torch.from_numpy(table).to(tower.attributes.weight.device))


def pad_sequences(sequences: list[np.ndarray], max_len: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad the last `max_len` items of each sequence -> ((B, L) int64, (B,) lengths)."""
    lengths = np.array([min(len(s), max_len) for s in sequences], np.int64)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    out = np.full((len(sequences), width), pad, np.int64)
    for row, sequence in enumerate(sequences):
        if lengths[row]:
            out[row, : lengths[row]] = sequence[-lengths[row] :]
    return out, lengths


def shape_from_manifest(
    manifest: dict, where: str, *, extra: tuple[str, ...] = ()
) -> tuple[TwoTowerShape, dict]:
    """The towers' shape saved in a bundle manifest, and the fields of `extra` a family adds to it."""
    fields = dict(manifest["model_shape"])
    added = {name: fields.pop(name, None) for name in extra}
    try:
        return TwoTowerShape(**fields), added
    except TypeError as error:
        raise BundleError(f"{where}/manifest.json: model_shape does not describe a model ({error})") from None
