"""S3-Rec loader: sequences, attribute names and titles, on a small folder in the shape of Beauty's."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from dataset_folders import write_s3rec

from recindex.data.registry import load_path
from recindex.data.s3rec import load_s3rec
from recindex.errors import DataFormatError


def test_titles_come_from_the_items_table_with_entities_decoded(tmp_path: Path) -> None:
    data = load_path(write_s3rec(tmp_path))
    titles = data.extra["item_titles"]
    assert len(titles) == data.n_items
    for item, title in zip(data.item_ids.tolist(), titles, strict=True):
        assert title == f"product {item} by l'artisan"


def test_attribute_names_have_entities_decoded(tmp_path: Path) -> None:
    names = load_path(write_s3rec(tmp_path)).item_features.names
    assert any(name.endswith("L'Oreal Paris") for name in names)
    assert any(name.endswith("Clean & Clear") for name in names)
    assert not any("&#" in name or "&amp;" in name for name in names)


def test_items_table_without_a_title_column_is_refused(tmp_path: Path) -> None:
    path = write_s3rec(tmp_path)
    (tmp_path / "Beauty_items.tsv").write_text("item_id\tasin\n1\tB1\n")
    with pytest.raises(DataFormatError, match="item_id' and one of title"):
        load_s3rec(path, items_path=tmp_path / "Beauty_items.tsv")


def test_amazon_layout_splits_brand_from_categories(tmp_path: Path) -> None:
    from dataset_folders import BRANDS, CATEGORIES, s3rec_items

    path = write_s3rec(tmp_path)
    data = load_s3rec(
        path, tmp_path / "Beauty_item2attributes.json", tmp_path / "Beauty_attribute_names.json",
        layout="brand+category",
    )
    raw = s3rec_items()
    features = data.item_features
    for index, item in enumerate(data.item_ids.tolist()):
        names = [features.names[t] for t in features.of(index)]
        brand = [f"brand={html.unescape(BRANDS[a])}" for a in raw[item] if a in BRANDS]
        categories = [f"category={CATEGORIES[a]}" for a in raw[item] if a in CATEGORIES]
        assert names == brand + categories


def test_tag_layout_and_unnamed_attributes(tmp_path: Path) -> None:
    path = write_s3rec(tmp_path)
    data = load_s3rec(path, tmp_path / "Beauty_item2attributes.json", None)
    assert data.item_features.names and all(n.startswith("tag=attr:") for n in data.item_features.names)
