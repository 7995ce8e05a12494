"""Attribute values: the limits on them, and multi-valued ones (sets of strings: an item's genres).

A multi-valued column comes as a sequence of lists (None or [] for no values, a single string for one
value), or compact as `ValueLists` (CSR codes into a vocabulary), which item_attributes builds for whole
catalogues. Each item's values are a set: a repeat counts once, and the first place is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain

import numpy as np

from recindex.errors import InvalidRequest

# What an attribute may be called: a name a filter expression can use as it is.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

MAX_STRING_CHARS = 1024
MAX_VALUES = 256  # values of one multi-valued attribute per item (Milvus ARRAY capacity)
LISTS = (list, tuple, set, frozenset)


class ValueLists(Sequence):
    """A multi-valued column in compact form: item i's values are
    `vocabulary[codes[offsets[i]:offsets[i + 1]]]`. It reads as a sequence of lists (None for none), so
    any backend takes it; the in-process store ingests it without a Python call per value, which is
    what keeps a catalogue of a million items quick to index."""

    def __init__(self, offsets: np.ndarray, codes: np.ndarray, vocabulary: Sequence[str]):
        self.offsets = np.asarray(offsets, np.int64)
        self.codes = np.asarray(codes, np.int64)
        self.vocabulary = list(vocabulary)
        if len(self.offsets) < 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.codes):
            raise ValueError("offsets must run from 0 to len(codes)")
        if len(self.codes) and not 0 <= self.codes.min() <= self.codes.max() < len(self.vocabulary):
            raise ValueError("codes must index the vocabulary")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> ValueLists:
        """The lists of `rows`, in that order, still compact."""
        starts, lengths = self.offsets[rows], np.diff(self.offsets)[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return ValueLists(offsets, self.codes[np.repeat(starts, lengths) + within], self.vocabulary)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        item = int(item)
        if not -len(self) <= item < len(self):
            raise IndexError(item)
        item %= len(self)
        codes = self.codes[self.offsets[item] : self.offsets[item + 1]].tolist()
        return [self.vocabulary[c] for c in codes] or None


def flatten_lists(name: str, values: Sequence) -> tuple[np.ndarray, list[str]]:
    """Values of a multi-valued attribute (lists, single strings, None) as lengths and one flat list."""
    lists = []
    for value in values:
        if value is None or isinstance(value, str):
            lists.append(() if value is None else (value,))
        elif isinstance(value, LISTS):
            lists.append(value)
        else:
            raise InvalidRequest(f"attribute {name!r} holds lists of strings; got {value!r}")
    flat = list(chain.from_iterable(lists))
    bad = next((text for text in flat if not isinstance(text, str)), None)
    if bad is not None:
        check_text(name, bad)
    for text in dict.fromkeys(flat):
        check_text(name, text)
    return np.fromiter(map(len, lists), np.int64, len(lists)), flat


def check_text(name: str, text) -> None:
    if not isinstance(text, str):
        raise InvalidRequest(f"attribute {name!r}: a list holds strings only, got {text!r}")
    if len(text) > MAX_STRING_CHARS:
        raise InvalidRequest(f"attribute {name!r}: values are at most {MAX_STRING_CHARS} chars")


def distinct_rows(name: str, lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Codes per row (CSR: lengths, codes) as a -1 padded matrix, each code once in its first place."""
    long = lengths > MAX_VALUES
    if long.any():  # rare: dedupe these rows first, so that no matrix is sized by a row of repeats
        pieces = np.split(codes, np.cumsum(lengths)[:-1])
        for row in np.flatnonzero(long).tolist():
            pieces[row] = np.asarray(list(dict.fromkeys(pieces[row].tolist())), codes.dtype)
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        codes = np.concatenate(pieces) if pieces else codes
    width = int(lengths.max()) if len(lengths) else 0
    matrix = np.full((len(lengths), width), -1, np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    matrix[rows, np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = codes
    # Repeats show as equal neighbours once each row is sorted; only those rows are rewritten.
    ordered = np.sort(matrix, axis=1)
    repeats = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)
    for row in np.flatnonzero(repeats).tolist():
        kept = list(dict.fromkeys(c for c in matrix[row].tolist() if c >= 0))
        matrix[row] = -1
        matrix[row, : len(kept)] = kept
    width = int((matrix >= 0).sum(axis=1).max()) if len(matrix) else 0
    if width > MAX_VALUES:
        raise InvalidRequest(f"attribute {name!r}: at most {MAX_VALUES} values per item, got {width}")
    return matrix[:, :width]


def value_set(name: str, value) -> list[str] | None:
    """One item's values of a multi-valued attribute: distinct strings in their order (None if none)."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, LISTS):
        raise InvalidRequest(f"attribute {name!r} holds lists of strings; got {value!r}")
    for text in values:
        check_text(name, text)
    distinct = list(dict.fromkeys(values))
    if len(distinct) > MAX_VALUES:
        raise InvalidRequest(f"attribute {name!r}: at most {MAX_VALUES} values per item, got {len(distinct)}")
    return distinct or None
