"""The README's filter examples run on the data they name: Beauty and ML-100K (the real files when the
shared data is here, else small folders of the same shape)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from dataset_folders import shipped
from tests.conftest import ROOT, SHARED_DATA

from recindex.index.exact_index import ExactIndex
from recindex.index.item_attributes import item_attributes

# "on Beauty, `expression`": the README names the data each example is for.
EXAMPLE = re.compile(r"on (Beauty|ML-100K), `([^`\n]+)`")
DATASETS = {"Beauty": "beauty", "ML-100K": "ml-100k"}


def readme_examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_shows_a_filter_for_each_dataset_we_ship():
    assert {name for name, _ in readme_examples()} == set(DATASETS)


@pytest.mark.parametrize(("name", "where"), readme_examples())
def test_readme_filter_selects_items_of_its_dataset(name: str, where: str, tmp_path: Path):
    data = shipped(DATASETS[name], tmp_path, SHARED_DATA)
    index = ExactIndex(8, "ip")
    vectors = np.random.default_rng(0).standard_normal((data.n_items, 8)).astype(np.float32)
    index.add(np.arange(data.n_items), vectors, attributes=item_attributes(data))
    result = index.search(vectors[:3], data.n_items, filter=where)
    matched = (result.ids >= 0).sum(axis=1)
    assert (matched == matched[0]).all(), "every query sees the same matching items"
    assert 0 < matched[0] < data.n_items, f"{where!r} should select some but not all {name} items"
