"""Numbering of code prefixes: one integer per distinct prefix of an item's tokens, the key by which
items are grouped under a parent or a leaf."""

from __future__ import annotations

import numpy as np


def prefix_numbers(codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    """(N, l) tokens, token j in 0..sizes[j]-1 -> (N,) one number per distinct prefix (0 for the
    empty prefix): the mixed-radix number the tokens spell."""
    number = np.zeros(len(codes), np.int64)
    for layer in range(codes.shape[1]):
        number = number * sizes[layer] + codes[:, layer]
    return number
