"""What the active version's items can be filtered on: each attribute's name, kind and a few of its
values (`GET /v1/attributes`), so that people and the web page write filters that fit this bundle.

The attributes are read from the popularity list, which carries every item's filter attributes (the
bundle's, and those of items written since), in the same store the filters run on.
"""

from __future__ import annotations

import numpy as np

from recindex.serve.recommender import ServingVersion

MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 100


def attribute_summary(version: ServingVersion) -> list[dict]:
    """[{name, kind, items, examples}] per attribute: `items` holding a value; `examples` the most
    common strings (of single or multi-valued attributes), the min, median and max of numbers, or
    true/false."""
    table = getattr(version.popular, "table", None)
    store = getattr(table, "attributes", None)
    if store is None:
        return []
    used = table.used
    rows = []
    for name, column in store.columns.items():
        values = column.values[:used]
        if column.kind in ("str", "str_list"):  # a multi-valued row holds several codes, -1 padded
            codes = values[values >= 0]
            counts = np.bincount(codes, minlength=len(column.vocabulary)) if len(codes) else np.zeros(0)
            common = np.argsort(-counts, kind="stable")[:MAX_EXAMPLES]
            examples = [column.vocabulary[c][:MAX_EXAMPLE_CHARS] for c in common.tolist() if counts[c] > 0]
            present = int((values >= 0).any(axis=1).sum()) if values.ndim == 2 else len(codes)
        elif column.kind == "num":
            numbers = values[~np.isnan(values)]
            present = len(numbers)
            examples = (
                [_plain(v) for v in (numbers.min(), np.median(numbers), numbers.max())] if present else []
            )
        elif column.kind == "bool":
            flags = values[values >= 0]
            present = len(flags)
            examples = sorted({bool(v) for v in flags.tolist()}, reverse=True)
        else:  # a kind this summary does not know: named, without examples
            present, examples = None, []
        rows.append({"name": name, "kind": column.kind, "items": present, "examples": examples})
    return rows


def _plain(value) -> float | int:
    """A whole number as an int (year 1995, not 1995.0), else the float."""
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number
