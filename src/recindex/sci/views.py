"""The common input form of SCI's input swapping: both towers read a sequence of item tokens.

An item token is an item's ID embedding plus its attribute bag (the two-tower model's `ItemTower`, which
both towers already share). So:

- the query tower f_q reads a sequence: the SASRec (or mean-pool) encoder over the tokens, its state
  after the last one. An item is a sequence of length one, so f_q(I) is the encoder's first position
  on I alone;
- the item tower f_i reads a set: the mean of the tokens. One item's set is the item itself, so f_i(I)
  is the plain item vector; a user's history gives f_i(Q), the mean of its items' tokens.

Nothing is added to the model: no parameter, no buffer. User features (when the data has them) belong
to the query tower's user input only; an item read by the query tower has none, and they add nothing
(the "absent" slot is zero, so it costs no parameter either). All outputs are L2-normalised.
"""

from __future__ import annotations

import numpy as np
import torch

from recindex.models.towers import l2_normalize
from recindex.models.two_tower import TwoTowerModel, content_bags, pad_sequences


def query_view_of_items(
    model: TwoTowerModel, items: torch.Tensor, id_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """f_q(I): (n,) items -> (n, d), each item read by the query tower as a sequence of one."""
    tokens = model.item_tower(items.reshape(-1, 1), id_keep)  # (n, 1, d)
    hidden = model.encoder(tokens, torch.ones(len(tokens), dtype=torch.long, device=tokens.device))
    return l2_normalize(hidden[:, 0])


def item_view_of_prefixes(
    model: TwoTowerModel, sequences: torch.Tensor, id_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """f_i(Q) after each position: (B, L) right-padded sequences -> (B, L, d), the running mean of the
    item tokens seen so far (padding comes after the real positions, so it never enters a real one)."""
    tokens = model.item_tower(sequences, id_keep)  # (B, L, d)
    counts = torch.arange(1, sequences.shape[1] + 1, dtype=tokens.dtype, device=tokens.device).view(1, -1, 1)
    return l2_normalize(tokens.cumsum(dim=1) / counts)


@torch.no_grad()
def catalogue_query_views(model: TwoTowerModel, batch_size: int = 8192) -> np.ndarray:
    """(N, d) f_q of every item of the catalogue: the query view the consistent index clusters."""
    model.eval()
    items = torch.arange(model.n_items, device=model.item_tower.trained.device)
    parts = [query_view_of_items(model, items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    return torch.cat(parts).cpu().numpy().astype(np.float32)


@torch.no_grad()
def content_query_views(model: TwoTowerModel, token_lists: list[list[int]]) -> np.ndarray:
    """(n, d) f_q of items known only by their attribute tokens (new items), through the same
    content-only item token that `content_vectors` gives the item tower."""
    model.eval()
    tokens = content_bags(model.item_tower, token_lists).unsqueeze(1)  # (n, 1, d)
    hidden = model.encoder(tokens, torch.ones(len(tokens), dtype=torch.long))
    return l2_normalize(hidden[:, 0]).numpy().astype(np.float32)


@torch.no_grad()
def training_queries(model: TwoTowerModel, split, batch_size: int = 1024) -> np.ndarray:
    """(U, d) f_q(Q) of each user with training items, after their last training item: the logged
    queries the consistent index may cluster with the items' query views."""
    model.eval()
    users = [u for u in range(model.shape.n_users) if len(split.train_sequence(u))]
    parts = []
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        sequences, lengths = pad_sequences(
            [split.train_sequence(u) for u in chunk], model.config.max_len, model.n_items
        )
        parts.append(
            model.user_vectors(torch.as_tensor(sequences), torch.as_tensor(lengths), torch.as_tensor(chunk))
        )
    if not parts:
        return np.zeros((0, model.config.dim), np.float32)
    return torch.cat(parts).numpy().astype(np.float32)
