"""A run's Parquet data read through user shards (`data.shard_users` > 0): one streaming pass partitions
the files into shards of whole users on disk (`data.user_shards`, in a temporary folder of this process
that the run removes), and the trainer draws its batches one shard at a time
(`train.shard_batches`), so that the training examples, the largest thing training holds, are never
all in memory. Under torchrun every process partitions the files itself (no folder is shared between
machines) and trains on its own shards.

The split, the evaluation and the bundle still take the dataset whole: it is joined from the shards,
the same `Interactions` (fingerprint included) that reading the folder gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.data.parquet_source import PARQUET_SUFFIXES
from recindex.data.user_shards import UserShards, is_parquet_folder, partition
from recindex.errors import RecIndexError
from recindex.train.distributed import Distributed
from recindex.train.shard_batches import ShardedExamples


@dataclass
class ShardedData:
    data: Interactions
    shards: UserShards
    batches: ShardedExamples

    def close(self) -> None:
        self.shards.close()


def open_sharded(config: ExperimentConfig, context: Distributed) -> ShardedData:
    """The run's dataset partitioned into shards of `data.shard_users` users, and its batches."""
    data_config, shard_users = config.data, config.data.shard_users
    if not isinstance(shard_users, int) or isinstance(shard_users, bool) or shard_users < 1:
        raise RecIndexError(f"data.shard_users must be a whole number >= 0 (0: off), got {shard_users!r}")
    path = Path(data_config.dataset)
    if not is_parquet_folder(path) and not (
        path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES
    ):
        raise RecIndexError(
            f"data.shard_users reads a Parquet file or folder of Parquet files; data.dataset is "
            f"{data_config.dataset!r}. Set data.shard_users = 0 for other data"
        )
    if config.model.kind != "two_tower":
        raise RecIndexError(
            f"data.shard_users trains model.kind = 'two_tower' only, not {config.model.kind!r}: "
            "set data.shard_users = 0"
        )
    if data_config.split != "leave_one_out":
        raise RecIndexError(
            f"data.shard_users splits each shard's users leave-one-out; data.split = {data_config.split!r} "
            "needs every user at once (temporal: global time cut-offs; cold_item: a catalogue-wide draw)"
        )
    if config.train.hard_negatives:
        raise RecIndexError("hard negatives are mined over every user at once: not with data.shard_users")
    shards = partition(path, shard_users, data_config.numeric_buckets)
    try:
        batches = ShardedExamples(
            shards, config.model.max_len, rank=context.rank, world_size=context.world_size
        )
        return ShardedData(shards.interactions(), shards, batches)
    except BaseException:
        shards.close()
        raise
