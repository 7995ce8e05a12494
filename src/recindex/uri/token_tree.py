"""The token tree of a semantic-ID index, and beam search over it restricted to prefixes that exist.

A generative retriever scores the next token given a query and a prefix; a prefix no item has leads
nowhere, so the beam only ever extends prefixes that exist (URI section 4, retrieval; TIGER does the
same). The items of the leaves the beam ends on are the candidate set a ranker then scores.

Prefixes are mixed-radix numbers (tokens t_1..t_l -> sum t_i k^(l-i)), kept per layer as sorted arrays,
so "which next tokens exist under these prefixes" is one mask lookup per layer, vectorized over the
queries and the beam.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.learned.codes import number_codes


class TokenTree:
    def __init__(self, codes: np.ndarray, k: int):
        codes = np.asarray(codes, np.int64)
        if codes.ndim != 2 or not len(codes) or codes.min() < 0 or codes.max() >= k:
            raise InvalidRequest(f"codes must be an (N, L) matrix of tokens in 0..{k - 1}")
        self.k, self.layers = k, codes.shape[1]
        self.codes = codes
        # per layer l: the sorted prefixes of length l + 1 that exist
        self.prefixes = [np.unique(self._prefix(codes, layer + 1)) for layer in range(self.layers)]
        leaves = self._prefix(codes, self.layers)
        self.leaf_keys, leaf_of = np.unique(leaves, return_inverse=True)
        self.members = np.argsort(leaf_of, kind="stable")  # items grouped by leaf (CSR)
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(leaf_of, minlength=len(self.leaf_keys)))])

    def _prefix(self, codes: np.ndarray, length: int) -> np.ndarray:
        radix = self.k ** np.arange(length - 1, -1, -1, dtype=np.int64)
        return (codes[:, :length] * radix).sum(1)

    def exists(self, prefixes: np.ndarray, layer: int) -> np.ndarray:
        """Whether each prefix of length layer + 1 is some item's."""
        keys = self.prefixes[layer]
        place = np.searchsorted(keys, prefixes).clip(max=len(keys) - 1)
        return keys[place] == prefixes

    def items_of(self, leaves: np.ndarray) -> np.ndarray:
        """Items under the given full-length prefixes (those that exist), leaf by leaf in their order."""
        return self.items_by_leaf(leaves)[0]

    def items_by_leaf(self, leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items, position in `leaves` of the leaf each item is under), leaf by leaf."""
        leaves = np.asarray(leaves, np.int64)
        place = np.searchsorted(self.leaf_keys, leaves).clip(max=len(self.leaf_keys) - 1)
        found = np.flatnonzero(self.leaf_keys[place] == leaves)
        if not len(found):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        place = place[found]
        counts = self.offsets[place + 1] - self.offsets[place]
        owner = np.repeat(found, counts)
        starts = np.repeat(self.offsets[place], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.members[starts + within], owner


def beam_search(
    next_token_log_probs: Callable[[np.ndarray, int], np.ndarray], tree: TokenTree, n_queries: int, beam: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top `beam` existing leaves per query, best first, by the sum of token log-probabilities.

    `next_token_log_probs(prefix_tokens, layer)` takes (n_queries, beam_now, layer) tokens chosen so far
    and returns (n_queries, beam_now, k) log-probabilities of the next token. Returns (leaves (n, beam),
    scores (n, beam)); a query whose tree has fewer leaves than `beam` gets -1 / -inf in the rest."""
    if beam < 1:
        raise InvalidRequest(f"beam must be at least 1, got {beam}")
    k = tree.k
    tokens = np.zeros((n_queries, 1, 0), np.int64)
    prefixes = np.zeros((n_queries, 1), np.int64)
    scores = np.zeros((n_queries, 1))
    for layer in range(tree.layers):
        log_probs = np.asarray(next_token_log_probs(tokens, layer), dtype=np.float64)
        if log_probs.shape != (n_queries, tokens.shape[1], k):
            raise InvalidRequest(
                f"next_token_log_probs gave shape {log_probs.shape}, "
                f"expected {(n_queries, tokens.shape[1], k)}"
            )
        extended = prefixes[:, :, None] * k + np.arange(k)[None, None, :]  # (n, b, k)
        total = scores[:, :, None] + log_probs
        total = np.where(tree.exists(extended.reshape(-1), layer).reshape(extended.shape), total, -np.inf)
        flat = total.reshape(n_queries, -1)
        keep = min(beam, flat.shape[1])
        chosen = np.argsort(-flat, axis=1, kind="stable")[:, :keep]
        scores = np.take_along_axis(flat, chosen, 1)
        parent, token = chosen // k, chosen % k
        prefixes = np.take_along_axis(extended.reshape(n_queries, -1), chosen, 1)
        tokens = np.concatenate(
            [np.take_along_axis(tokens, parent[:, :, None], 1), token[:, :, None]], axis=2
        )
    prefixes = np.where(np.isfinite(scores), prefixes, -1)
    return prefixes, scores


def existing_children(
    live_codes: np.ndarray, prefixes: np.ndarray, layer: int, sizes: list[int]
) -> np.ndarray:
    """(n, sizes[layer]) whether token t under each row's prefix exists among the live items' codes (a
    prefix with no child at all allows every token: the item then opens a new leaf)."""
    size = sizes[layer]
    radix = sizes[:layer]
    children = np.unique(number_codes(live_codes[:, :layer], radix) * size + live_codes[:, layer])
    wanted = number_codes(prefixes, radix)[:, None] * size + np.arange(size)
    allowed = np.isin(wanted, children)
    allowed[~allowed.any(1)] = True
    return allowed
