"""CI's `fine="rq"` scores: each candidate scored on its RQ decode, centroid + codewords, not its vector.

The decode's inner product with a query is the query's score against the item's list centroid (the
routing already computed it) plus, per level, its score against the item's codeword there; the latter
come from per-query lookup tables (levels x codewords), so a candidate costs `levels` lookups.
"""

from __future__ import annotations

import numpy as np


def rq_decode_scorer(queries: np.ndarray, coarse: np.ndarray, codebook: np.ndarray, columns: dict):
    """A `Scorer` over the RQ decode. `coarse`: (Q, nlist) query-centroid scores; `codebook`: (levels,
    1, codewords, d); `columns`: CI's store columns, "lists" (each slot's lists, nearest first) and
    "codes" (its codeword per level)."""
    first, codes = columns["lists"][:, 0], columns["codes"]
    lut = np.einsum("lmd,qd->qlm", codebook[:, 0], queries)  # (Q, levels, codewords)
    levels = codebook.shape[0]

    def score(who: np.ndarray, slots: np.ndarray) -> np.ndarray:
        values = coarse[who][:, first[slots]]
        for level in range(levels):
            values = values + lut[who, level][:, codes[slots, level]]
        return values

    return score
