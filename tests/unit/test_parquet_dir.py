"""Interactions from a folder of Parquet files, read in batches: the same data as the single file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.registry import load_dataset
from recindex.data.tabular import load_table
from recindex.errors import DataFormatError, RecIndexError


def log_table(n_rows: int = 600, seed: int = 0, text_ids: bool = False) -> pa.Table:
    """A log with ties in time, multi-valued and numeric item features and a user feature."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n_rows)
    items = rng.integers(0, 90, n_rows)
    genres = np.array(["a", "b|c", "c", "a|d", None], dtype=object)
    return pa.table(
        {
            "user": [f"u{u}" for u in users] if text_ids else users,
            "item": items * 7 + 3,
            "timestamp": rng.integers(0, 50, n_rows),  # few distinct times: many ties keep row order
            "item_genre": genres[rng.integers(0, len(genres), n_rows)].tolist(),
            "item_price": np.where(rng.random(n_rows) < 0.3, np.nan, rng.integers(1, 500, n_rows) / 4),
            "user_country": rng.choice(["DE", "FR", "US"], n_rows).tolist(),
        }
    )


def write_parts(table: pa.Table, folder: Path, parts: int, row_group: int = 37) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for part in range(parts):
        piece = table.slice(bounds[part], bounds[part + 1] - bounds[part])
        pq.write_table(piece, folder / f"part-{part:03d}.parquet", row_group_size=row_group)
    return folder


@pytest.mark.parametrize("text_ids", [False, True])
def test_folder_reads_as_the_single_file(tmp_path: Path, text_ids: bool) -> None:
    table = log_table(text_ids=text_ids)
    pq.write_table(table, tmp_path / "log.parquet")
    single = load_table(tmp_path / "log.parquet")
    folder = write_parts(table, tmp_path / "log", parts=3)
    (folder / "_SUCCESS").write_text("")  # a writer's marker file, not data
    streamed = load_parquet_dir(folder, batch_rows=50)  # batches cross files and row groups
    assert streamed.fingerprint() == single.fingerprint()
    assert streamed.user_ids.tolist() == single.user_ids.tolist()
    assert streamed.item_features.names == single.item_features.names
    assert load_dataset(str(folder)).fingerprint() == single.fingerprint()


def test_integer_text_ids_become_integers_only_if_all_are(tmp_path: Path) -> None:
    first = pa.table({"user": ["1", "2"], "item": ["10", "11"]})
    second = pa.table({"user": ["3", "3"], "item": ["12", "x7"]})
    pq.write_table(first, write_parts(first, tmp_path / "a", 1) / "part-000.parquet")
    pq.write_table(second, tmp_path / "a" / "part-001.parquet")
    data = load_parquet_dir(tmp_path / "a", batch_rows=2)
    assert data.user_ids.tolist() == [1, 2, 3]  # every user id reads as an integer
    assert data.item_ids.tolist() == ["10", "11", "12", "x7"]  # one item id does not: all stay text


def test_user_shards_partition_the_sequences(tmp_path: Path) -> None:
    folder = write_parts(log_table(), tmp_path / "log", parts=2)
    whole = load_parquet_dir(folder)
    shards = [load_parquet_dir(folder, shard=(rank, 3)) for rank in range(3)]
    for user in range(whole.n_users):
        owner = shards[user % 3]
        assert owner.item_ids.tolist() == whole.item_ids.tolist()  # global id maps on every rank
        assert owner.sequence(user).tolist() == whole.sequence(user).tolist()
        assert all(len(shards[r].sequence(user)) == 0 for r in range(3) if r != user % 3)
    assert sum(s.n_interactions for s in shards) == whole.n_interactions


def test_bad_folders_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecIndexError, match=r"empty: a folder must hold Parquet files"):
        load_dataset(str(empty))
    with pytest.raises(RecIndexError, match="no Parquet files"):
        load_parquet_dir(empty)
    folder = write_parts(log_table(), tmp_path / "log", parts=2)
    pq.write_table(pa.table({"user": [1], "item_id": [2]}), folder / "part-002.parquet")
    with pytest.raises(
        DataFormatError,
        match=r"part-002.parquet: expected a column named 'item' "
        r"\(columns found: user, item_id\); rename 'item_id' to 'item'",
    ):
        load_parquet_dir(folder)
    (folder / "part-002.parquet").unlink()
    pq.write_table(pa.table({"user": [1], "item": ["2"]}), folder / "part-002.parquet")
    with pytest.raises(DataFormatError, match=r"part-002.parquet: expected the columns of part-000.parquet"):
        load_parquet_dir(folder)


def test_empty_id_names_file_and_row(tmp_path: Path) -> None:
    folder = write_parts(pa.table({"user": [1, 2, 3], "item": [1, 2, 3]}), tmp_path / "log", parts=1)
    pq.write_table(pa.table({"user": [4, None], "item": [1, 2]}), folder / "part-001.parquet")
    with pytest.raises(DataFormatError, match=r"part-001.parquet: expected an id in column 'user' \(row 2\)"):
        load_parquet_dir(folder)


def test_stats_of_a_folder(tmp_path: Path) -> None:
    table = log_table()
    pq.write_table(table, tmp_path / "log.parquet")
    folder = write_parts(table, tmp_path / "log", parts=3)
    result = CliRunner().invoke(app, ["data", "stats", str(folder)])
    assert result.exit_code == 0, result.output
    assert load_table(tmp_path / "log.parquet").fingerprint()[:16] in result.output
    assert f"{table.num_rows:,}" in result.output


def test_training_on_a_folder_keeps_its_fingerprint(tmp_path: Path) -> None:
    from recindex.config import load_config
    from recindex.pipelines import load_bundle
    from recindex.pipelines.experiment import run_experiment

    table = log_table(n_rows=1500)
    pq.write_table(table, tmp_path / "log.parquet")
    folder = write_parts(table, tmp_path / "log", parts=3)
    settings = [
        f'data.dataset="{folder}"',
        "model.dim=8",
        "model.max_len=10",
        "train.epochs=1",
        "train.batch_size=32",
        "train.threads=1",
        "train.uniform_negatives=8",
    ]
    run_experiment(load_config(None, settings), tmp_path / "bundle", progress=False)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest["dataset"]["fingerprint"] == load_table(tmp_path / "log.parquet").fingerprint()
    assert bundle.data.item_ids.tolist() == load_parquet_dir(folder).item_ids.tolist()  # the id maps
