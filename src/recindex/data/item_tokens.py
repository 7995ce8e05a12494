"""Content tokens of new items in a trained vocabulary: feature values -> the token ids a bundle knows.

A bundle's item tower knows the tokens its data gave (`ItemFeatures.names`): `field=value` per value of
a text column (`genre=comedy`), and for a numeric column bucketed by quantiles (`data.tabular`) one
token per bucket, `price=[7, 30)`. A new item's `item_<field>` cells are read the same way: text cells
split on `|`, each value its token; a number falls in the bucket whose range holds it (below the first
bucket: the first, above the last: the last, as the training data's buckets were cut). Values the
vocabulary lacks give no token; `unknown` counts them, so a caller can say how much content was lost.
"""

from __future__ import annotations

import re

import numpy as np

from recindex.data.numeric import NUMBER
from recindex.data.table_features import split_values

BUCKET = re.compile(r"^\[(?P<low>[^,\]]+), (?P<high>[^,\])]+)[\])]$")


class ItemTokens:
    def __init__(self, names: list[str]):
        self.index = {name: token for token, name in enumerate(names)}
        labels: dict[str, list[tuple[str, int]]] = {}
        for token, name in enumerate(names):
            field, sep, value = name.partition("=")
            if sep:
                labels.setdefault(field, []).append((value, token))
        # field -> (cut points: each bucket's lower bound but the first's, token of each bucket)
        self.buckets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for field, values in labels.items():
            bounds = [BUCKET.match(value) for value, _ in values]
            if all(bounds) and all(NUMBER.match(b["low"]) for b in bounds):
                lows = np.array([float(b["low"]) for b in bounds])
                order = np.argsort(lows)
                tokens = np.array([token for _, token in values])[order]
                self.buckets[field] = (lows[order][1:], tokens)
        self.fields = set(labels)
        self.unknown = 0  # values seen that the vocabulary has no token for

    def of_rows(self, columns: dict[str, list[str | None]], n_rows: int) -> list[list[int]]:
        """Each row's token ids from field -> its cells (None: empty), fields in the given order."""
        rows: list[list[int]] = [[] for _ in range(n_rows)]
        for field, cells in columns.items():
            if field in self.buckets:
                self._numbers(field, cells, rows)
                continue
            tokens_of: dict[str, list[int]] = {}  # distinct cells repeat a lot: look each up once
            for row, cell in enumerate(cells):
                if cell is None:
                    continue
                if cell not in tokens_of:
                    tokens_of[cell] = self._values(field, cell)
                rows[row].extend(tokens_of[cell])
        return rows

    def _values(self, field: str, cell: str) -> list[int]:
        found = []
        for value in split_values(cell):
            token = self.index.get(f"{field}={value}")
            if token is None:
                self.unknown += 1
            else:
                found.append(token)
        return found

    def _numbers(self, field: str, cells: list[str | None], rows: list[list[int]]) -> None:
        cuts, tokens = self.buckets[field]
        for row, cell in enumerate(cells):
            if cell is None:
                continue
            if not NUMBER.match(cell.strip()):
                self.unknown += 1
                continue
            rows[row].append(int(tokens[np.searchsorted(cuts, float(cell), side="right")]))
