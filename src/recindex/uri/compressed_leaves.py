"""URI's leaves held a second time as 4-bit fast-scan codes (`compress="pq4"`), for a compressed scan.

A URI index built with `compress="pq4"` scans the beam's leaves as 4-bit PQ codes in FAISS's fast-scan
kernel and rescores the best k x `refine` estimates exactly from the stored vectors, as CI's lists do
(`recindex.index.learned.compressed`); without it, every item of the leaves is scored exactly.

The token tree numbers its leaves by their place among the live ones, a number that shifts whenever an
item opens a leaf or the last item of one is removed. The codes need a list number that does not move,
so a leaf's list is its token prefix as a number: the first `leaf_layers` tokens with the largest token
count as radix, which is how the tree and the beam number leaves (`TokenTree`). That bounds the lists
to radix ** leaf_layers (1,024 for the Beauty recipe's 2 layers of 32 tokens); a shape past
`MAX_LEAF_LISTS` is refused, as most of its lists could never be filled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.learned import number_codes
from recindex.index.learned.compressed import CompressedPartitions

MAX_LEAF_LISTS = 1 << 16
REFINE = 8  # the default refine depth: the codes' best k x 8 are rescored (as CI's default)


def leaf_lists(token_sizes: list[int], leaf_layers: int) -> int:
    """The number of lists a compressed URI index keeps: every prefix number its leaves can have."""
    lists = max(token_sizes[:leaf_layers]) ** leaf_layers
    if lists > MAX_LEAF_LISTS:
        raise InvalidRequest(
            f"compress=pq4 keeps one list per possible leaf ({max(token_sizes[:leaf_layers])} tokens ** "
            f"{leaf_layers} layers = {lists:,}); at most {MAX_LEAF_LISTS:,}: serve this model uncompressed"
        )
    return lists


class CompressedLeaves:
    def __init__(
        self,
        dim: int,
        token_sizes: list[int],
        leaf_layers: int,
        code_dims: int,
        state: dict[str, np.ndarray] | None = None,
    ):
        self.leaf_layers = leaf_layers
        self.radix = max(token_sizes[:leaf_layers])
        self.partitions = CompressedPartitions(dim, leaf_lists(token_sizes, leaf_layers), state, code_dims)

    def keys(self, codes: np.ndarray) -> np.ndarray:
        """(n, 1) list numbers of items with these (n, layers) codes."""
        return number_codes(codes[:, : self.leaf_layers], self.radix)[:, None]

    def placed(self, slots: np.ndarray, vectors: np.ndarray, codes: np.ndarray, new: np.ndarray) -> None:
        """Code stored items into their leaves' lists; a replaced one (`new` False) leaves its list first."""
        keys = self.keys(codes)
        self.partitions.placed(slots, vectors, keys, np.where(new[:, None], -1, keys))

    def rebuilt(self, slots: np.ndarray, vectors: np.ndarray, codes: np.ndarray) -> None:
        """Every stored item coded afresh with the same quantizer (after slots were renumbered)."""
        self.partitions = self.partitions.rebuilt(slots, vectors, self.keys(codes))

    def ranked(
        self,
        queries: np.ndarray,
        leaves: np.ndarray,
        k: int,
        refine: int,
        rows: np.ndarray,
        eligible: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each query's top k over its (n, beam) leaves (prefix numbers, -1: none): the codes' best
        k x refine, rescored by the stored `rows`. (slots, scores, codes scanned per query)."""
        return self.partitions.ranked(queries, leaves, k, refine, rows, eligible)

    def save(self, folder: Path) -> None:
        self.partitions.save(folder)

    @staticmethod
    def saved_state(folder: Path) -> dict[str, np.ndarray] | None:
        return CompressedPartitions.saved_state(folder)
