"""Evaluation one user shard at a time (`eval.shard_eval`): the metrics merged over the shards are the
metrics of the whole dataset's cases, for the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recindex.config import ModelConfig
from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.splits import cold_item, leave_one_out
from recindex.data.synthetic import SyntheticConfig, generate
from recindex.data.user_shards import partition
from recindex.eval.evaluate import evaluate_model
from recindex.eval.metrics import ranking_report
from recindex.eval.shard_eval import MetricSums, evaluate_shards
from recindex.models.two_tower import TwoTowerModel
from recindex.train.shard_batches import ShardedExamples

SPLITS = {"leave_one_out": leave_one_out, "cold_item": lambda data: cold_item(data, 0.15, seed=3)}


def parquet_log(folder: Path) -> Path:
    """A synthetic log's rows, interleaved across users by time, in two Parquet files; a user feature
    (the user tower reads it by user number: a shard's users must be numbered as in the whole data)."""
    data = generate(SyntheticConfig(n_users=260, n_items=90, n_clusters=5, n_attributes=10, seed=4))
    users = np.repeat(data.user_ids, data.lengths())
    order = np.argsort(data.timestamps, kind="stable")
    table = pa.table(
        {
            "user": users[order],
            "item": data.item_ids[data.items][order],
            "timestamp": data.timestamps[order],
            "user_group": [f"g{user % 4}" for user in users[order].tolist()],
        }
    )
    folder.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "a.parquet")
    pq.write_table(table.slice(half), folder / "b.parquet")
    return folder


@pytest.mark.parametrize(("n_items", "ks"), [(150, (5, 10, 20)), (15, (5, 10, 20))])
def test_sums_over_parts_give_the_report_of_every_case(n_items: int, ks: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    width = min(max(ks), n_items)
    ranks = rng.integers(0, n_items, 1000)
    top = rng.integers(0, n_items, (1000, width))
    counts = rng.integers(0, 50, n_items)
    cold = rng.random(1000) < 0.2
    whole = ranking_report(ranks, top, counts, ks, cold)
    sums = MetricSums(counts, ks)
    for lo, hi in [(0, 137), (137, 137), (137, 500), (500, 1000)]:  # an empty part too
        sums.add(ranks[lo:hi], top[lo:hi], cold[lo:hi])
    merged = sums.report()
    assert list(merged) == list(whole)  # the same metrics in the same order
    for key, value in whole.items():
        assert merged[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("kind", sorted(SPLITS))
@pytest.mark.parametrize("which", ["valid", "test"])
def test_a_model_evaluated_shard_by_shard_gets_the_whole_evaluation(
    tmp_path: Path, kind: str, which: str
) -> None:
    folder = parquet_log(tmp_path / "log")
    whole = load_parquet_dir(folder)
    split_of = SPLITS[kind]
    split = split_of(whole)
    counts = np.bincount(split.train_items, minlength=whole.n_items)
    torch.manual_seed(0)
    model = TwoTowerModel.for_data(whole, ModelConfig(dim=16, max_len=10))
    ks = (5, 10, 20, 50)
    expected = evaluate_model(model, split, which, counts, ks=ks).metrics
    assert model.shape.user_cardinalities  # the user feature is read
    assert expected["cases"] > 200 and (kind != "cold_item" or expected["cold_cases"] > 0)
    with partition(folder, 37) as shards:
        assert shards.n_shards > 5
        merged = evaluate_shards(model, shards, which, counts, split_of, ks=ks, batch_size=50)
    assert list(merged) == list(expected)
    for key, value in expected.items():
        assert merged[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_a_split_of_shards_counts_what_the_whole_split_trains_on(tmp_path: Path) -> None:
    """The cold-item split's training sequences cannot be told from the users' lengths: the shards are
    split once to count each shard's training users and each item's training occurrences."""
    folder = parquet_log(tmp_path / "log")
    split = SPLITS["cold_item"](load_parquet_dir(folder))
    trainable = np.diff(split.train_offsets) >= 2
    with partition(folder, 37) as shards:
        examples = ShardedExamples(shards, 10, split_of=SPLITS["cold_item"])
        ranges = [shards.users_of(shard) for shard in range(shards.n_shards)]
        assert examples.users_per_shard.tolist() == [int(trainable[r.start : r.stop].sum()) for r in ranges]
        counts = np.bincount(split.train_items, minlength=shards.n_items)
        assert examples.training_item_counts().tolist() == counts.tolist()
        assert not examples.training_item_counts()[split.cold_items].any()
