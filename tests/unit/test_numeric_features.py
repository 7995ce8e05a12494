"""Numeric feature columns of CSV/Parquet tables: quantile buckets as content tokens, raw numbers as
filter attributes, the `data.numeric_buckets` setting, and what stays text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recindex.config import DataConfig, load_config
from recindex.data.numeric import quantile_buckets
from recindex.data.storage import load_interactions, save_interactions
from recindex.data.tabular import NUMERIC_BUCKETS, load_table
from recindex.index.exact_index import ExactIndex
from recindex.index.item_attributes import item_attributes

N_ITEMS = 50
PRICES = [round(1.5 + 2.25 * i, 2) for i in range(N_ITEMS)]  # 50 distinct prices, 1.5 .. 111.75


def write_shop(tmp_path: Path) -> Path:
    """60 users, each with 4 items; items have a price, a brand and a zero-padded code."""
    rng = np.random.default_rng(0)
    lines = ["user,item,timestamp,item_price,item_brand,item_code,user_age"]
    for user in range(60):
        for step, item in enumerate(rng.choice(N_ITEMS, 4, replace=False).tolist()):
            brand = "acme" if item % 2 else "globex"
            lines.append(f"u{user},i{item},{step},{PRICES[item]},{brand},0{item % 3},{18 + user}")
    path = tmp_path / "shop.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def fields_of(data, field: str) -> list[str]:
    return [name for name in data.item_features.names if name.startswith(f"{field}=")]


def raw_prices(data) -> np.ndarray:
    return np.array([PRICES[int(str(i)[1:])] for i in data.item_ids.tolist()])


def test_a_numeric_column_becomes_a_few_bucket_tokens_and_keeps_its_numbers(tmp_path: Path):
    data = load_table(write_shop(tmp_path))
    assert len(fields_of(data, "price")) == NUMERIC_BUCKETS  # not one token per price
    assert np.array_equal(data.item_features.numeric["price"], raw_prices(data))
    for item in range(data.n_items):  # each item's bucket holds its price
        (label,) = [data.item_features.names[t] for t in data.item_features.of(item) if "price=" in
                    data.item_features.names[t]]
        low, high = (float(x) for x in label[len("price=[") : -1].split(", "))
        assert low <= raw_prices(data)[item] <= high
    assert sorted(fields_of(data, "brand")) == ["brand=acme", "brand=globex"]
    assert sorted(fields_of(data, "code")) == ["code=00", "code=01", "code=02"]  # a leading zero: a code
    assert "code" not in data.item_features.numeric


def test_numeric_filters_read_the_raw_value(tmp_path: Path):
    data = load_table(write_shop(tmp_path))
    attributes = item_attributes(data)
    assert attributes["price"] == raw_prices(data).tolist()
    index = ExactIndex(4, "ip")
    vectors = np.random.default_rng(1).standard_normal((data.n_items, 4)).astype(np.float32)
    index.add(np.arange(data.n_items), vectors, attributes=attributes)
    found = index.search(vectors[:1], data.n_items, filter='10 <= price < 50 and brand == "acme"').ids[0]
    brands = attributes["brand"]
    expected = {i for i, p in enumerate(raw_prices(data)) if 10 <= p < 50 and brands[i] == "acme"}
    assert set(found[found >= 0].tolist()) == expected and expected


def test_the_bucket_count_is_a_setting(tmp_path: Path):
    path = write_shop(tmp_path)
    assert len(fields_of(load_table(path, numeric_buckets=3), "price")) == 3
    assert len(fields_of(load_table(path, numeric_buckets=0), "price")) == N_ITEMS  # off: a token per value
    assert DataConfig().numeric_buckets == NUMERIC_BUCKETS
    with pytest.raises(Exception, match="numeric_buckets must be a whole number"):
        load_table(path, numeric_buckets=-1)


def test_training_reads_the_setting(tmp_path: Path):
    from tests.conftest import tiny_settings

    from recindex.pipelines import load_bundle
    from recindex.pipelines.experiment import run_experiment

    settings = [*tiny_settings(str(write_shop(tmp_path))), "data.numeric_buckets=4", "train.epochs=1"]
    result = run_experiment(load_config(None, settings), tmp_path / "bundle", progress=False)
    assert len(fields_of(load_bundle(result.bundle_path).data, "price")) == 4


def test_few_distinct_numbers_keep_a_token_each(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("user,item,item_size\na,x,1\na,y,2\nb,z,2\nb,x,1\n")
    data = load_table(path)
    assert sorted(fields_of(data, "size")) == ["size=1", "size=2"]
    assert item_attributes(data)["size"] == [1.0, 2.0, 2.0]


def test_user_numeric_columns_are_bucketed(tmp_path: Path):
    users = load_table(write_shop(tmp_path)).user_features
    assert len(users.vocab["age"]) == 1 + NUMERIC_BUCKETS and users.vocab["age"][1].startswith("[18, ")
    assert users.codes["age"].min() >= 1  # every user has an age


def test_parquet_numbers_with_missing_values(tmp_path: Path):
    table = pa.table({
        "user": [f"u{k % 7}" for k in range(40)],
        "item": [f"i{k}" for k in range(40)],
        "item_price": [None if k % 10 == 0 else float("nan") if k % 10 == 5 else k * 1.5 for k in range(40)],
    })
    pq.write_table(table, tmp_path / "t.parquet")
    data = load_table(tmp_path / "t.parquet")
    prices = data.item_features.numeric["price"]
    assert np.isnan(prices[::5]).all() and not np.isnan(np.delete(prices, np.s_[::5])).any()
    assert len(fields_of(data, "price")) == NUMERIC_BUCKETS
    assert item_attributes(data)["price"][0] is None


def test_numbers_survive_a_bundle_round_trip(tmp_path: Path):
    data = load_table(write_shop(tmp_path))
    save_interactions(data, tmp_path / "saved")
    loaded = load_interactions(tmp_path / "saved")
    assert np.array_equal(loaded.item_features.numeric["price"], data.item_features.numeric["price"])
    assert loaded.fingerprint() == data.fingerprint()


def test_quantile_buckets_are_equal_frequency_with_readable_edges():
    labels, which = quantile_buckets(np.array([1.0, 2, 3, 4, 5, 6, 7, 8, np.nan]), 4)
    assert labels == ["[1, 3)", "[3, 5)", "[5, 7)", "[7, 8]"]
    assert which.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, -1]
    labels, which = quantile_buckets(np.array([5.0, 5, 5, 9]), 4)  # ties share a bucket
    assert labels == ["[5, 9)", "[9, 9]"] and which.tolist() == [0, 0, 0, 1]
