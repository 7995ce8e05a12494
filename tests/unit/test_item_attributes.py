"""Filterable attributes from item features: one-valued, multi-valued and numeric keys, and the
attributes of the datasets we ship (the real files when present, else folders of the same shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_folders import shipped
from tests.conftest import SHARED_DATA

from recindex.data.interactions import Interactions, ItemFeatures
from recindex.index.item_attributes import item_attributes


def with_features(token_lists: list[list[int]], names: list[str]) -> Interactions:
    n = len(token_lists)
    return Interactions.from_sequences(
        list(range(2)), list(range(n)), [list(range(n)), [0]],
        item_features=ItemFeatures.from_lists(token_lists, names),
    )


def test_one_valued_multi_valued_and_numeric_keys():
    names = ["genre=Comedy", "genre=Drama", "year=1995", "year=2001", "brand=acme", "no key", "bad key=x"]
    data = with_features([[0, 1, 2, 4], [1, 3, 5], [6], [0, 0, 2]], names)
    attributes = item_attributes(data)
    assert sorted(attributes) == ["brand", "genre", "popularity", "year"]
    assert list(attributes["genre"]) == [["Comedy", "Drama"], ["Drama"], None, ["Comedy"]]
    assert attributes["year"] == [1995.0, 2001.0, None, 1995.0]  # a repeated token is one value
    assert attributes["brand"] == ["acme", None, None, None]
    assert attributes["popularity"] == [2.0, 1.0, 1.0, 1.0]


def test_beauty_items_have_brand_and_categories(tmp_path: Path):
    data = shipped("beauty", tmp_path, SHARED_DATA)
    attributes = item_attributes(data)
    assert sorted(attributes) == ["brand", "category", "popularity"]
    brands = [b for b in attributes["brand"] if b is not None]
    assert brands and all(isinstance(b, str) for b in brands)
    assert "L'Oreal Paris" in brands  # entities decoded
    categories = list(attributes["category"])
    assert all(c for c in categories), "every Beauty item has categories"
    assert not set(brands) & {c for row in categories for c in row}, "a brand is never a category"
    assert any(len(row) > 1 for row in categories)


def test_movielens_items_have_genres_and_year(tmp_path: Path):
    attributes = item_attributes(shipped("ml-100k", tmp_path, SHARED_DATA))
    assert sorted(attributes) == ["genre", "popularity", "year"]
    assert any(row and len(row) > 1 for row in attributes["genre"])
    years = [y for y in attributes["year"] if y is not None]
    assert years and all(isinstance(y, float) and 1900 < y < 2100 for y in years)


@pytest.mark.parametrize("name", ["beauty", "ml-100k"])
def test_shipped_attributes_go_into_an_index(name: str, tmp_path: Path):
    from recindex.index.exact_index import ExactIndex

    data = shipped(name, tmp_path, SHARED_DATA)
    index = ExactIndex(4, "ip")
    vectors = np.random.default_rng(0).standard_normal((data.n_items, 4)).astype(np.float32)
    index.add(np.arange(data.n_items), vectors, attributes=item_attributes(data))
    kinds = index.table.attributes.schema
    assert kinds == ({"popularity": "num", "brand": "str", "category": "str_list"} if name == "beauty"
                     else {"popularity": "num", "genre": "str_list", "year": "num"})
