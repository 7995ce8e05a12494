"""One number per code: a row of digits read as a mixed-radix number.

Learned indexes name an item's place by a short code (MFLI's residual digits, URI's tokens, CI's list plus
fine codes). Leaves, prefixes and report buckets are those codes as single integers, so that equal codes
compare equal, sort together and index arrays. Every index numbers codes here, the same way: the first
digit is the most significant, so a prefix's number is the number of its code cut short and the items
under one prefix are contiguous once sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def number_codes(codes: np.ndarray, radix: int | Sequence[int]) -> np.ndarray:
    """(..., L) digits -> (...) int64 numbers; `radix` is the number of values of each digit (one for
    all, or one per position). The first position's radix only bounds its digit; it weighs nothing."""
    codes = np.asarray(codes, np.int64)
    length = codes.shape[-1]
    sizes = np.broadcast_to(np.asarray(radix, np.int64), (length,))
    # weight of position i = product of the radices after it
    weights = np.append(np.cumprod(sizes[:0:-1])[::-1], np.int64(1)).astype(np.int64)
    return (codes * weights).sum(-1)
