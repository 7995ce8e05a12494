"""A Parquet folder partitioned into user shards on disk: the same id maps, sequences and fingerprint as
the folder loaded whole, each shard holding whole users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tests.unit.test_parquet_dir import log_table, write_parts
from typer.testing import CliRunner

from recindex.cli import app
from recindex.data import registry
from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.user_shards import partition
from recindex.errors import RecIndexError


@pytest.mark.parametrize("text_ids", [False, True])
@pytest.mark.parametrize("shard_users", [1, 7, 1000])
def test_shards_joined_are_the_folder_loaded_whole(tmp_path: Path, text_ids: bool, shard_users: int) -> None:
    folder = write_parts(log_table(n_rows=2000, text_ids=text_ids), tmp_path / "log", parts=3)
    whole = load_parquet_dir(folder)
    with partition(folder, shard_users, batch_rows=97) as shards:  # batches cross files and row groups
        assert shards.n_shards == -(-whole.n_users // shard_users)
        assert shards.user_lengths.tolist() == whole.lengths().tolist()
        assert shards.item_counts.tolist() == whole.item_counts().tolist()
        assert shards.fingerprint() == whole.fingerprint()  # hashed one shard at a time
        joined = shards.interactions()
        assert joined.fingerprint() == whole.fingerprint()
        assert joined.user_ids.tolist() == whole.user_ids.tolist()
        assert joined.item_ids.tolist() == whole.item_ids.tolist()


def test_a_shard_holds_whole_users_in_time_order(tmp_path: Path) -> None:
    folder = write_parts(log_table(n_rows=2000), tmp_path / "log", parts=2)
    whole = load_parquet_dir(folder)
    with partition(folder, 6) as shards:
        for shard in range(shards.n_shards):
            part = shards.read(shard)
            users = shards.users_of(shard)
            assert part.user_ids.tolist() == whole.user_ids[users.start : users.stop].tolist()
            for local, user in enumerate(users):
                assert part.sequence(local).tolist() == whole.sequence(user).tolist()
                lo, hi = whole.offsets[user], whole.offsets[user + 1]
                assert part.timestamps[part.offsets[local] : part.offsets[local + 1]].tolist() == (
                    whole.timestamps[lo:hi].tolist()
                )
            expected = whole.user_features.codes["country"][users.start : users.stop]
            np.testing.assert_array_equal(part.user_features.codes["country"], expected)


def test_the_scratch_folder_goes_with_the_shards_and_a_full_one_is_refused(tmp_path: Path) -> None:
    folder = write_parts(log_table(n_rows=300), tmp_path / "log", parts=2)
    with partition(folder, 10) as shards:
        scratch = shards.folder
        assert any(scratch.iterdir())
    assert not scratch.exists()
    kept = tmp_path / "kept"
    with partition(folder, 10, folder=kept):
        pass
    assert any(kept.iterdir())  # a folder the caller named is the caller's
    with pytest.raises(RecIndexError, match="must be empty or new"):
        partition(folder, 10, folder=kept)
    with pytest.raises(RecIndexError, match="users per shard must be a whole number >= 1, got 0"):
        partition(folder, 0)
    with partition(folder, 10) as shards, pytest.raises(RecIndexError, match="shard 99 does not exist"):
        shards.read(99)


def test_stats_of_a_folder_stream_it_and_read_as_the_single_file(tmp_path: Path, monkeypatch) -> None:
    table = log_table(n_rows=1000)
    pq.write_table(table, tmp_path / "log.parquet")
    folder = write_parts(table, tmp_path / "log", parts=3)
    single = CliRunner().invoke(app, ["data", "stats", str(tmp_path / "log.parquet")])

    def whole(*_, **__):
        raise AssertionError("the folder was loaded whole")

    monkeypatch.setattr(registry, "load_parquet_dir", whole)
    streamed = CliRunner().invoke(app, ["data", "stats", str(folder)])
    assert streamed.exit_code == 0, streamed.output
    assert streamed.output.splitlines()[1:] == single.output.splitlines()[1:]  # all but the title (name)
