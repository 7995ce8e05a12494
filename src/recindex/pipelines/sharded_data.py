"""A run's Parquet data read through user shards (`data.shard_users` > 0), so that no step of the run holds
every user's interactions at once. One streaming pass partitions the files into shards of whole users
on disk (`data.user_shards`, in a temporary folder of this process that the run removes), numbering
users and items (the id maps) on the way; then each step reads one shard at a time:

- the split: each shard is split on its own (leave-one-out, or cold-item, whose cold items are drawn
  from the item set alone), which is the whole split restricted to its users (`train.shard_batches`);
- training: the trainer draws its batches shard by shard (`train.shard_batches`);
- evaluation: validation (early stopping) and the final test rank one shard's cases at a time and add
  up the metrics' sums and counts (`eval.shard_eval`), giving the whole evaluation's metrics;
- the bundle: its `data/` is written shard by shard into the files a run in memory writes, and read
  back memory-mapped (`bundle`); its fingerprint is hashed shard by shard.

What stays whole is what is per user or per item, not per interaction: the id maps and features, the
users' lengths and the items' training counts, and the model. Under torchrun every process partitions
the files itself (no folder is shared between machines), trains on its own shards, and ranks a block of
every shard's cases at evaluation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recindex.config import DataConfig, ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.data.parquet_source import PARQUET_SUFFIXES
from recindex.data.splits import Split, cold_item, leave_one_out
from recindex.data.user_shards import UserShards, is_parquet_folder, partition
from recindex.errors import RecIndexError
from recindex.eval.evaluate import CaseShard
from recindex.models.two_tower import TwoTowerModel
from recindex.train.distributed import Distributed
from recindex.train.shard_batches import ShardedExamples

# Splits made per user, so that a shard of whole users is split on its own (temporal cuts at quantiles of
# every timestamp: not one of them)
SHARD_SPLITS = ("leave_one_out", "cold_item")


@dataclass
class ShardedData:
    shards: UserShards
    batches: ShardedExamples

    def evaluate(
        self,
        model: TwoTowerModel,
        which: str,
        config: ExperimentConfig,
        *,
        progress: bool = False,
        shard: CaseShard | None = None,
    ) -> dict[str, float]:
        """`evaluate.evaluate_split`'s metrics for `which`, one shard at a time (popularity: training's)."""
        counts = self.batches.training_item_counts()
        evaluation = config.eval
        return self.batches.evaluate(
            model,
            which,
            counts,
            ks=evaluation.ks,
            exclude_seen=evaluation.exclude_seen,
            batch_size=evaluation.batch_size,
            progress=progress,
            shard=shard,
        )

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
    if data_config.split not in SHARD_SPLITS:
        raise RecIndexError(
            f"data.shard_users splits each shard's users on their own (leave_one_out or cold_item); "
            f"data.split = {data_config.split!r} needs every user at once (temporal: time cut-offs at "
            "quantiles of every timestamp)"
        )
    if config.train.hard_negatives:
        raise RecIndexError("hard negatives are mined over every user at once: not with data.shard_users")
    shards = partition(path, shard_users, data_config.numeric_buckets)
    try:
        batches = ShardedExamples(
            shards,
            config.model.max_len,
            rank=context.rank,
            world_size=context.world_size,
            split_of=_split_of(data_config),
        )
        return ShardedData(shards, batches)
    except BaseException:
        shards.close()
        raise


def _split_of(data_config: DataConfig) -> Callable[[Interactions], Split]:
    """The split of one shard's users that `data.split` describes: the whole split restricted to them
    (cold_item's cold items are drawn from the item set, the same for every shard)."""
    if data_config.split == "leave_one_out":
        return leave_one_out  # the trainer counts its training users from the users' lengths alone
    return functools.partial(cold_item, share=data_config.cold_share, seed=data_config.split_seed)
