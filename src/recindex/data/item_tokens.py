"""Content tokens of new items in a trained vocabulary: feature values -> the token ids a bundle knows.

A bundle's item tower knows the tokens its data gave (`ItemFeatures.names`): `field=value` per value of
a text column (`genre=comedy`), and for a numeric column bucketed by quantiles (`data.tabular`) one
token per bucket, `price=[7, 30)`. A new item's `item_<field>` cells are read the same way: text cells
split on `|` (values stripped, a value repeated in a row counted once), each value its token; a number
falls in the bucket whose range holds it (below the first bucket: the first, above the last: the last,
as the training data's buckets were cut). Values the vocabulary lacks give no token; `unknown` counts
them, so a caller can say how much content was lost.

Whole columns are mapped at once with Arrow compute (split, trim, look-up), not cell by cell: an export
maps millions of rows.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recindex.data.numeric import NUMBER

BUCKET = re.compile(r"^\[(?P<low>[^,\]]+), (?P<high>[^,\])]+)[\])]$")


class ItemTokens:
    def __init__(self, names: list[str]):
        self.n_tokens = len(names)
        labels: dict[str, list[tuple[str, int]]] = {}
        for token, name in enumerate(names):
            field, sep, value = name.partition("=")
            if sep:
                labels.setdefault(field, []).append((value, token))
        # field -> (cut points: each bucket's lower bound but the first's, token of each bucket)
        self.buckets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # field -> (its values, the token of each) for a look-up of whole columns
        self.values: dict[str, tuple[pa.Array, np.ndarray]] = {}
        for field, pairs in labels.items():
            bounds = [BUCKET.match(value) for value, _ in pairs]
            if all(bounds) and all(NUMBER.match(b["low"]) for b in bounds):
                lows = np.array([float(b["low"]) for b in bounds])
                order = np.argsort(lows)
                tokens = np.array([token for _, token in pairs])[order]
                self.buckets[field] = (lows[order][1:], tokens)
            else:
                values = pa.array([value for value, _ in pairs], pa.string())
                self.values[field] = (values, np.array([token for _, token in pairs]))
        self.unknown = 0  # values seen that the vocabulary has no token for

    def of_rows(self, columns: dict[str, pa.Array], n_rows: int) -> list[list[int]]:
        """Each row's token ids from field -> its cells as text (null: empty), fields in the given order."""
        rows, tokens = [], []
        for field, cells in columns.items():
            found = self._numbers(field, cells) if field in self.buckets else self._texts(field, cells)
            rows.append(found[0])
            tokens.append(found[1])
        if not rows:
            return [[] for _ in range(n_rows)]
        row, token = np.concatenate(rows), np.concatenate(tokens)
        # A value repeated in a row counts once (as in training); the first of each is kept, in order.
        first = np.sort(np.unique(row * max(1, self.n_tokens) + token, return_index=True)[1])
        row, token = row[first], token[first]
        order = np.argsort(row, kind="stable")  # by row, each row's tokens in field and cell order
        flat = token[order].tolist()
        offsets = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n_rows))]).tolist()
        return [flat[offsets[r] : offsets[r + 1]] for r in range(n_rows)]

    def _texts(self, field: str, cells: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        parts = pc.split_pattern(cells, "|")
        values = pc.utf8_trim_whitespace(pc.list_flatten(parts))
        parent = pc.list_parent_indices(parts).to_numpy()
        present = pc.not_equal(values, "").to_numpy(zero_copy_only=False)
        vocabulary, tokens = self.values.get(field, (pa.array([], pa.string()), np.zeros(0, np.int64)))
        where = pc.fill_null(pc.index_in(values, value_set=vocabulary), -1).to_numpy().astype(np.int64)
        known = present & (where >= 0)
        self.unknown += int((present & (where < 0)).sum())
        return parent[known].astype(np.int64), tokens[where[known]].astype(np.int64)

    def _numbers(self, field: str, cells: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        cuts, tokens = self.buckets[field]
        text = pc.utf8_trim_whitespace(cells)
        numeric = pc.fill_null(pc.match_substring_regex(text, NUMBER.pattern), False)
        numeric = numeric.to_numpy(zero_copy_only=False)
        present = pc.is_valid(text).to_numpy(zero_copy_only=False)
        self.unknown += int((present & ~numeric).sum())
        rows = np.flatnonzero(numeric)
        numbers = pc.cast(pc.filter(text, pa.array(numeric)), pa.float64()).to_numpy(zero_copy_only=False)
        return rows.astype(np.int64), tokens[np.searchsorted(cuts, numbers, side="right")].astype(np.int64)
