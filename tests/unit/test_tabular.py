"""CSV/TSV/Parquet interaction tables: columns, timestamps, features and error messages."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recindex.data.tabular import load_table
from recindex.errors import DataFormatError, RecIndexError

CSV = (
    "user,item,timestamp,item_genre,item_brand,user_country\n"
    "alice,m1,300,Action|Comedy,Acme,DE\n"
    "bob,m2,2020-01-01,Drama,,\n"
    "alice,m2,100,Drama|Drama,Other,FR\n"  # alice's country is DE (first row); m2's brand is Other
    "bob,m1,2020-01-01T00:00:10+00:00,Horror,Zeta,NA\n"  # m1 keeps its first row's features
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def names_of(data, item: int) -> list[str]:
    return [data.item_features.names[t] for t in data.item_features.of(item)]


def test_csv_sequences_timestamps_and_ids(tmp_path: Path) -> None:
    data = load_table(write(tmp_path, "log.csv", CSV))
    assert data.name == "log"
    assert data.user_ids.tolist() == ["alice", "bob"]
    assert data.item_ids.tolist() == ["m1", "m2"]
    assert data.item_ids[data.sequence(0)].tolist() == ["m2", "m1"]  # sorted by time, not file order
    new_year = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp())
    assert data.timestamps.tolist() == [100, 300, new_year, new_year + 10]


def test_item_and_user_features(tmp_path: Path) -> None:
    data = load_table(write(tmp_path, "log.csv", CSV))
    assert names_of(data, 0) == ["genre=Action", "genre=Comedy", "brand=Acme"]
    assert names_of(data, 1) == ["genre=Drama", "brand=Other"]  # first non-empty value, duplicates merged
    users = data.user_features
    assert users.vocab["country"] == ["unknown", "DE", "NA"]  # 'NA' is a value, not a missing cell
    assert [users.vocab["country"][c] for c in users.codes["country"]] == ["DE", "NA"]


def test_tsv_with_integer_ids_and_no_timestamp(tmp_path: Path) -> None:
    data = load_table(write(tmp_path, "log.tsv", "user\titem\n5\t10\n5\t007\n6\t10\n5\t11\n"))
    assert data.timestamps is None
    assert data.user_ids.tolist() == [5, 6]
    # '007' is not a canonical integer, so the ids stay text (and '10' is not merged with '010').
    assert data.item_ids.tolist() == ["10", "007", "11"]
    assert data.lengths().tolist() == [3, 1]
    assert data.item_ids[data.sequence(0)].tolist() == ["10", "007", "11"]  # file order without timestamps


def test_integer_text_ids_become_ints(tmp_path: Path) -> None:
    data = load_table(write(tmp_path, "log.csv", "user,item\n1,20\n2,30\n"))
    assert data.user_ids.dtype.kind == "i" and data.item_ids.tolist() == [20, 30]


def test_parquet_matches_csv(tmp_path: Path) -> None:
    csv_data = load_table(
        write(tmp_path, "log.csv", "user,item,timestamp,item_genre\n1,5,30,A|B\n1,6,20,C\n2,5,10,A\n")
    )
    table = pa.table(
        {
            "user": pa.array([1, 1, 2], pa.int64()),
            "item": pa.array(["5", "6", "5"]),
            "timestamp": pa.array([30, 20, 10], pa.int32()),
            "item_genre": pa.array(["A|B", "C", "A"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    parquet_data = load_table(tmp_path / "log.parquet")
    assert parquet_data.fingerprint() == csv_data.fingerprint()
    assert names_of(parquet_data, 0) == ["genre=A", "genre=B"]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([dt.datetime(2021, 5, 1, 12), dt.datetime(2021, 5, 1, 13)], pa.timestamp("ms")),
        pa.array([dt.datetime(2021, 5, 1, 12), dt.datetime(2021, 5, 1, 13)], pa.timestamp("us", tz="UTC")),
        pa.array(["2021-05-01T12:00:00", "2021-05-01 13:00:00Z"]),
        pa.array([1619870400.0, 1619874000.0]),
    ],
)
def test_parquet_timestamp_types(tmp_path: Path, column: pa.Array) -> None:
    pq.write_table(pa.table({"user": [1, 1], "item": [1, 2], "timestamp": column}), tmp_path / "t.pq")
    assert load_table(tmp_path / "t.pq").timestamps.tolist() == [1619870400, 1619874000]


def test_parquet_float_ids_that_are_whole_become_ints(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user": [1.0, 2.0], "item": [3.0, 4.5]}), tmp_path / "f.parquet")
    data = load_table(tmp_path / "f.parquet")
    assert data.user_ids.tolist() == [1, 2] and data.item_ids.tolist() == ["3", "4.5"]


def test_parquet_dates(tmp_path: Path) -> None:
    column = pa.array([dt.date(1970, 1, 3), dt.date(1970, 1, 2)], pa.date32())
    pq.write_table(pa.table({"user": [1, 1], "item": [1, 2], "timestamp": column}), tmp_path / "d.parquet")
    data = load_table(tmp_path / "d.parquet")
    assert data.timestamps.tolist() == [86_400, 2 * 86_400]
    assert data.item_ids[data.sequence(0)].tolist() == [2, 1]


def test_unknown_columns_warn(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="ignoring column\\(s\\) rating, note"):
        data = load_table(write(tmp_path, "log.csv", "user,item,rating,note\n1,2,5,x\n"))
    assert data.n_interactions == 1


def test_no_warning_for_known_columns(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_table(write(tmp_path, "log.csv", CSV))


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as caught:
        load_table(write(tmp_path, "log.csv", "user_id,item,ts\n1,2,3\n"))
    message = str(caught.value)
    assert "log.csv, line 1" in message and "'user'" in message
    assert "user_id, item, ts" in message and "rename 'user_id'" in message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("user,item\n1,2\n3,\n", 3, "expected an id in column 'item', found 'an empty cell'"),
        ("user,item\n1,2\n\n,4\n", 4, "expected an id in column 'user'"),  # blank lines still count as lines
        (
            'user,item\n"a\nb",2\n1,\n',
            4,
            "expected an id in column 'item'",
        ),  # a quoted newline spans two lines
        ("user,item,timestamp\n1,2,5\n1,3,yesterday\n", 3, "found 'yesterday'"),
        ("user,item,timestamp\n1,2,5\n1,3,\n", 3, "expected a timestamp"),
        ("user,item\n1,2\n1,2,3\n", 3, "2 comma-separated cells per row"),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    with pytest.raises(DataFormatError) as caught:
        load_table(write(tmp_path, "bad.csv", text))
    assert caught.value.line == line
    assert f"bad.csv, line {line}: " in str(caught.value)
    assert fragment in str(caught.value)


def test_parquet_bad_rows_name_the_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user": [1, None, 3], "item": [1, 2, 3]}), tmp_path / "n.parquet")
    with pytest.raises(DataFormatError, match=r"n\.parquet: expected an id in column 'user' \(row 2\)"):
        load_table(tmp_path / "n.parquet")
    pq.write_table(
        pa.table({"user": [1, 2], "item": [1, 2], "timestamp": [1.0, 2.5]}), tmp_path / "f.parquet"
    )
    with pytest.raises(DataFormatError, match=r"whole seconds \(row 2\), found '2.5'"):
        load_table(tmp_path / "f.parquet")


@pytest.mark.parametrize("text", ["", "user,item\n"])
def test_empty_files(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataFormatError, match="empty.csv"):
        load_table(write(tmp_path, "empty.csv", text))


def test_not_a_parquet_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="a Parquet file"):
        load_table(write(tmp_path, "x.parquet", "user,item\n1,2\n"))
    with pytest.raises(RecIndexError, match="unsupported table type '.xlsx'"):
        load_table(write(tmp_path, "x.xlsx", ""))


def test_utf8_bom_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffuser,item\nü,2\n".encode())
    data = load_table(path)
    assert data.user_ids.tolist() == ["ü"] and data.item_ids.tolist() == [2]


def test_many_rows_are_loaded_quickly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 1000, 50_000), rng.integers(0, 5000, 50_000)
    stamps = rng.integers(0, 10**9, 50_000)
    lines = "\n".join(f"{u},{i},{t},g{i % 7}" for u, i, t in zip(users, items, stamps, strict=True))
    data = load_table(write(tmp_path, "big.csv", "user,item,timestamp,item_genre\n" + lines + "\n"))
    assert data.n_interactions == 50_000
    first = data.sequence(0)
    assert np.all(np.diff(data.timestamps[: len(first)]) >= 0)
    assert data.item_features.n_tokens == 7
