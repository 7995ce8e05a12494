"""Training on a Parquet folder through user shards (`data.shard_users`): the run trains, keeps the
folder's data and id maps in its bundle, and lands where the in-memory run lands (the same examples per
epoch, in another order); what the shard path cannot do is refused."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tests.integration.test_distributed_training import _environment

from recindex.config import load_config
from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.synthetic import SyntheticConfig, generate
from recindex.data.user_shards import UserShards
from recindex.errors import RecIndexError
from recindex.pipelines import experiment, load_bundle
from recindex.pipelines.experiment import evaluate_bundle, run_experiment
from recindex.pipelines.recommend import recommend_for_user

WORKER = Path(__file__).with_name("sharded_ddp_worker.py")


def synthetic_folder(folder: Path, parts: int = 3) -> Path:
    """A synthetic log's rows, interleaved across users by time, in `parts` Parquet files."""
    data = generate(SyntheticConfig(n_users=400, n_items=120, n_clusters=6, n_attributes=12, seed=2))
    users = np.repeat(data.user_ids, data.lengths())
    order = np.argsort(data.timestamps, kind="stable")
    table = pa.table(
        {"user": users[order], "item": data.item_ids[data.items][order], "timestamp": data.timestamps[order]}
    )
    folder.mkdir(parents=True)
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for part in range(parts):
        piece = table.slice(bounds[part], bounds[part + 1] - bounds[part])
        pq.write_table(piece, folder / f"part-{part}.parquet", row_group_size=500)
    return folder


def run_settings(folder: Path, shard_users: int) -> list[str]:
    return [
        f'data.dataset="{folder}"',
        f"data.shard_users={shard_users}",
        "model.dim=16",
        "model.max_len=10",
        "train.epochs=4",
        "train.patience=10",
        "train.batch_size=32",
        "train.threads=1",
        "train.uniform_negatives=16",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("sharded")
    folder = synthetic_folder(root / "log")
    results = {}
    for shard_users in (0, 50):
        result = run_experiment(
            load_config(None, run_settings(folder, shard_users)), root / f"b{shard_users}", progress=False
        )
        results[shard_users] = result
    return folder, results, root


def test_a_folder_trains_through_user_shards_to_the_in_memory_result(runs) -> None:
    folder, results, root = runs
    in_memory, sharded = results[0], results[50]
    bundle = load_bundle(root / "b50")
    assert bundle.manifest["dataset"]["fingerprint"] == load_parquet_dir(folder).fingerprint()
    assert bundle.data.user_ids.tolist() == load_parquet_dir(folder).user_ids.tolist()  # the id maps
    assert sharded.training.epochs_run == in_memory.training.epochs_run == 4
    # the same examples each epoch in another order: both learn (the loss falls every epoch) and land
    # at the same quality within seed noise (measured: test Recall@10 0.120 in memory, 0.113 in shards)
    for run in (in_memory, sharded):
        losses = [record["loss"] for record in run.training.history]
        assert losses == sorted(losses, reverse=True)
    for which in ("valid", "test"):
        for metric, noise in (("recall@10", 0.06), ("recall@100", 0.04)):
            assert abs(getattr(sharded, which)[metric] - getattr(in_memory, which)[metric]) < noise
    assert sharded.training.history != in_memory.training.history  # it did take the other path


def test_the_bundle_of_a_run_in_shards_holds_the_data_a_run_in_memory_stores(runs) -> None:
    """Written shard by shard into the same files, byte for byte, and read back mapped from disk."""
    _, _, root = runs
    whole, parts = root / "b0" / "data", root / "b50" / "data"
    names = sorted(path.name for path in whole.iterdir())
    assert names == sorted(path.name for path in parts.iterdir()) and "items.npy" in names
    for name in names:
        assert (parts / name).read_bytes() == (whole / name).read_bytes(), name
    sharded, in_memory = load_bundle(root / "b50"), load_bundle(root / "b0")
    assert sharded.manifest["dataset"]["memory_map"] is True
    assert "memory_map" not in in_memory.manifest["dataset"]  # a run in memory writes what it wrote
    assert isinstance(sharded.data.items, np.memmap) and not isinstance(in_memory.data.items, np.memmap)
    user = int(np.argmax(in_memory.data.lengths()))
    assert sharded.data.sequence(user).tolist() == in_memory.data.sequence(user).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mapped history goes to torch like one in memory
        history, top, _ = recommend_for_user(sharded, str(sharded.data.user_ids[user]), 10)
    assert history.tolist() == in_memory.data.sequence(user).tolist()
    assert len(top) == 10 and not set(top.tolist()) & set(history.tolist())


@pytest.mark.parametrize("split", ["leave_one_out", "cold_item"])
def test_a_run_in_shards_evaluates_its_model_as_the_whole_data_does(runs, tmp_path: Path, split: str) -> None:
    """The run's metrics, merged over the shards, are those of its bundle's model evaluated on the whole
    dataset and split (the ranks exactly; the means to float rounding)."""
    folder = runs[0]
    config = load_config(None, [*run_settings(folder, 50), "train.epochs=2", f'data.split="{split}"'])
    result = run_experiment(config, tmp_path / "bundle", progress=False)
    bundle = load_bundle(tmp_path / "bundle")
    assert ("cold_recall@10" in result.test) == (split == "cold_item")
    for which in ("valid", "test"):
        whole = evaluate_bundle(bundle, which)
        merged = getattr(result, which)
        assert list(merged) == list(whole)
        for key, value in whole.items():
            assert merged[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (which, key)


def test_a_run_in_shards_never_holds_the_whole_dataset(runs, tmp_path: Path, monkeypatch) -> None:
    """Neither the dataset joined from its shards nor a split of every user is made."""
    folder = runs[0]

    def refused(*_, **__):
        raise AssertionError("the whole dataset was joined or split")

    monkeypatch.setattr(UserShards, "interactions", refused)
    monkeypatch.setattr(experiment, "split_for", refused)
    config = load_config(None, [*run_settings(folder, 50), "train.epochs=1"])
    result = run_experiment(config, tmp_path / "bundle", progress=False)
    assert result.split is None and result.data.n_interactions == 0  # the ids and features alone
    assert result.test["cases"] > 300
    assert load_bundle(tmp_path / "bundle").data.n_interactions == load_parquet_dir(folder).n_interactions


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('model.kind="mfli"', "trains model.kind = 'two_tower' only"),
        ('data.split="temporal"', "splits each shard's users on their own"),
        ("data.shard_users=-1", "data.shard_users must be a whole number >= 0"),
    ],
)
def test_what_the_shard_path_cannot_do_is_refused(runs, setting: str, message: str) -> None:
    folder = runs[0]
    config = load_config(None, [*run_settings(folder, 50), setting])
    with pytest.raises(RecIndexError, match=message):
        run_experiment(config, None, progress=False)


def test_other_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecIndexError, match="reads a Parquet file or folder of Parquet files"):
        run_experiment(load_config(None, run_settings(Path("synthetic"), 50)), None, progress=False)


def test_two_ranks_train_on_their_own_shards_in_step(runs, tmp_path: Path) -> None:
    """Two gloo ranks, each drawing batches from its own shards only: they take as many steps per epoch
    (else the gradient all-reduce would hang), hold the same weights after every step, and log the same
    history; rank 0 writes the bundle of the folder's data."""
    folder = runs[0]
    environment = _environment({"WORLD_SIZE": "2"})
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(folder), str(tmp_path)],
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for rank in ranks:
        _, errors = rank.communicate(timeout=600)
        assert rank.returncode == 0, errors[-3000:]
    zero, one = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2))
    assert zero["history"] == one["history"] and len(zero["history"]) == 2
    assert zero["valid"] == one["valid"]
    for name, weight in zero["weights"].items():
        assert torch.equal(weight, one["weights"][name]), name
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest["dataset"]["fingerprint"] == load_parquet_dir(folder).fingerprint()
