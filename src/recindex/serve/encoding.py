"""The query tower at serving time: histories -> query vectors, on the device the settings name.

    vectors = encode_histories(bundle, [history_a, history_b], users=[3, 8])   # (2, d), one pass

Several requests' histories are encoded in one pass when the service batches requests
(serve.batching); one request's history is the same call with one row.
"""

from __future__ import annotations

import copy
import weakref

import numpy as np
import torch

from recindex.bundle import Bundle
from recindex.models.devices import resolve_device
from recindex.models.two_tower import pad_sequences

# Where the query tower runs (`ServiceSettings.device`, process-wide like the threads). Bundles stay on
# the CPU, where everything else reads them; on a GPU, each bundle's model gets one copy there, made at
# its first query and dropped with the bundle.
_query_device = torch.device("cpu")
_on_device: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_query_device(setting: str) -> None:
    global _query_device
    _query_device = resolve_device(setting)
    _on_device.clear()


def _query_model(model: torch.nn.Module) -> torch.nn.Module:
    if _query_device.type == "cpu":
        return model
    placed = _on_device.get(model)
    if placed is None:
        placed = _on_device[model] = copy.deepcopy(model).to(_query_device).eval()
    return placed


def encode_histories(bundle: Bundle, histories: list[np.ndarray], users: list[int] | None) -> np.ndarray:
    """(len(histories), d) query vectors; `users`: the bundle's user index of each row (their user
    features join in), or None for anonymous histories (recent items).

    Rows are encoded in groups of one padded width: padding a history to a longer width changes the
    order of the attention's sums, and with it the vector's last bits; within one width each row's
    vector is the one it gets alone (tests/service/test_batching.py checks it), so a batched request
    gets the answer it would get alone."""
    model = _query_model(bundle.model)
    widths: dict[int, list[int]] = {}
    for row, history in enumerate(histories):
        widths.setdefault(max(1, min(len(history), model.config.max_len)), []).append(row)
    if len(widths) == 1:
        return _encode(model, histories, users)
    out = None
    for rows in widths.values():
        vectors = _encode(
            model, [histories[r] for r in rows], [users[r] for r in rows] if users is not None else None
        )
        if out is None:
            out = np.empty((len(histories), vectors.shape[1]), vectors.dtype)
        out[rows] = vectors
    return out


def _encode(model: torch.nn.Module, histories: list[np.ndarray], users: list[int] | None) -> np.ndarray:
    padded, lengths = pad_sequences(histories, model.config.max_len, model.n_items)
    device = _query_device
    rows = torch.tensor(users, device=device) if users is not None else None
    sequences, lengths = torch.as_tensor(padded).to(device), torch.as_tensor(lengths).to(device)
    with torch.inference_mode():
        return model.user_vectors(sequences, lengths, rows).cpu().numpy()


def encode_history(bundle: Bundle, history: np.ndarray, user: int | None) -> np.ndarray:
    """(1, d): one history's query vector."""
    return encode_histories(bundle, [history], None if user is None else [user])
