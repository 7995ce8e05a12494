"""New items' feature cells mapped onto a trained vocabulary: values, buckets, repeats and unknowns."""

from __future__ import annotations

import pyarrow as pa

from recindex.data.item_tokens import ItemTokens

NAMES = ["genre=comedy", "genre=drama", "price=[7, 30)", "price=[30, 99)", "price=[99, 120]", "brand=acme"]


def test_values_buckets_repeats_and_unknowns() -> None:
    tokens = ItemTokens(NAMES)
    columns = {
        "genre": pa.array([" drama|comedy", "comedy|comedy", None, "horror", ""]),
        "price": pa.array(["12.5", "99", "5", "1000", "cheap"]),
        "brand": pa.array(["acme", None, "acme", None, None]),
    }
    rows = tokens.of_rows(columns, 5)
    assert [[NAMES[t] for t in row] for row in rows] == [
        ["genre=drama", "genre=comedy", "price=[7, 30)", "brand=acme"],
        ["genre=comedy", "price=[99, 120]"],  # 'comedy' twice in one cell counts once
        ["price=[7, 30)", "brand=acme"],  # below the first bucket: the first
        ["price=[99, 120]"],  # 'horror' is unknown; above the last bucket: the last
        [],  # an empty cell gives nothing, 'cheap' is not a number
    ]
    assert tokens.unknown == 2  # horror, cheap


def test_fields_the_vocabulary_lacks() -> None:
    tokens = ItemTokens(NAMES)
    assert tokens.of_rows({"colour": pa.array(["red", None])}, 2) == [[], []]
    assert tokens.unknown == 1
    assert tokens.of_rows({}, 2) == [[], []]
