from pathlib import Path

import numpy as np
import pytest
from tests.unit.test_parquet_dir import log_table, write_parts

from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.storage import load_interactions, save_interactions, save_interactions_in_parts
from recindex.data.user_shards import partition
from recindex.errors import RecIndexError


def test_round_trip_keeps_fingerprint(tiny_synthetic, tmp_path):
    save_interactions(tiny_synthetic, tmp_path / "d")
    loaded = load_interactions(tmp_path / "d")
    assert loaded.fingerprint() == tiny_synthetic.fingerprint()
    assert np.array_equal(loaded.items, tiny_synthetic.items)
    assert loaded.item_features.names == tiny_synthetic.item_features.names


@pytest.mark.parametrize("timed", [True, False])
def test_a_dataset_saved_shard_by_shard_is_the_dataset_saved_whole(tmp_path: Path, timed: bool) -> None:
    table = log_table(n_rows=1500)
    folder = write_parts(table if timed else table.drop_columns(["timestamp"]), tmp_path / "log", parts=3)
    whole = load_parquet_dir(folder)
    save_interactions(whole, tmp_path / "whole")
    with partition(folder, 7) as shards:
        assert shards.n_shards > 3
        offsets = shards.offsets()
        save_interactions_in_parts(shards.skeleton, offsets, shards.parts(), tmp_path / "parts", timed=timed)
    files = sorted(path.name for path in (tmp_path / "whole").iterdir())
    assert files == sorted(path.name for path in (tmp_path / "parts").iterdir())
    assert ("timestamps.npy" in files) == timed
    for name in files:  # byte for byte: a bundle's checksums do not tell the two apart
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    mapped = load_interactions(tmp_path / "parts", memory_map=True)
    assert isinstance(mapped.items, np.memmap) and isinstance(mapped.timestamps, np.memmap) == timed
    assert mapped.fingerprint() == whole.fingerprint()
    assert mapped.sequence(5).tolist() == whole.sequence(5).tolist()


def test_parts_that_disagree_with_the_offsets_are_refused(tiny_synthetic, tmp_path: Path) -> None:
    offsets = tiny_synthetic.offsets.copy()
    offsets[-1] += 1
    with pytest.raises(RecIndexError, match="the parts hold"):
        save_interactions_in_parts(tiny_synthetic, offsets, [tiny_synthetic], tmp_path / "d", timed=True)
