"""Recommendations for one known user from a bundle, and item descriptions for display."""

from __future__ import annotations

import numpy as np
import torch

from recindex.bundle import Bundle
from recindex.data.interactions import Interactions
from recindex.errors import RecIndexError
from recindex.index.exact import exact_search
from recindex.models.two_tower import pad_sequences


def find_user(data: Interactions, raw_id: str) -> int:
    ids = data.user_ids
    numeric = ids.dtype.kind in "iu" and raw_id.removeprefix("-").isdecimal()  # integer ids may be negative
    matches = np.flatnonzero(ids == (int(raw_id) if numeric else raw_id))
    if not len(matches):
        raise RecIndexError(f"unknown user {raw_id!r}: not among the {data.n_users:,} users of {data.name}")
    return int(matches[0])


def recommend_for_user(bundle: Bundle, raw_user: str, k: int, *, exclude_seen: bool = True):
    """(history item indices, recommended item indices, scores) for the user's full history."""
    data, model = bundle.data, bundle.model
    user = find_user(data, raw_user)
    history = data.sequence(user)
    padded, lengths = pad_sequences([history], model.config.max_len, model.n_items)
    with torch.no_grad():
        query = model.user_vectors(torch.as_tensor(padded), torch.as_tensor(lengths), torch.tensor([user]))
    offsets = np.array([0, len(history)]) if exclude_seen else None
    ids, scores, _ = exact_search(
        query,
        torch.as_tensor(bundle.item_embeddings),
        k,
        exclude_offsets=offsets,
        exclude_items=history if exclude_seen else None,
    )
    return history, ids[0], scores[0]


def describe_item(data: Interactions, item: int) -> tuple[str, str]:
    """(raw id, title or attribute names) for display."""
    titles = data.extra.get("item_titles")
    about = titles[item] if titles else ""
    if data.item_features is not None:
        names = [data.item_features.names[t] for t in data.item_features.of(item)]
        about = f"{about}  [{', '.join(names[:6])}]" if about else ", ".join(names[:6])
    return str(data.item_ids[item]), about
