"""`recindex embed`: item tables encoded into checksummed shards, resumed after an interruption, split
over processes, and indexed by `recindex index build --embeddings` for the bundle that wrote them only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import BundleError, RecIndexError
from recindex.hashing import sha256_file
from recindex.pipelines import build_bundle_index, load_bundle, load_bundle_index
from recindex.pipelines.embed import embed_items, parse_shard_of
from recindex.pipelines.embedding_shards import open_export
from recindex.pipelines.item_encoder import ItemEncoder

DATASET = "synthetic:n_users=150,n_items=60,n_attributes=12,seed=4"


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle(DATASET))


def attribute_cells(bundle, items) -> list[str]:
    features = bundle.data.item_features
    return ["|".join(features.names[t].partition("=")[2] for t in features.of(int(i))) for i in items]


def catalogue_table(bundle, folder: Path, parts: int = 2) -> Path:
    """The bundle's own items, in catalogue order, with their content, in `parts` files."""
    items = np.arange(bundle.data.n_items)
    table = pa.table({"item": bundle.data.item_ids, "item_attr": attribute_cells(bundle, items)})
    folder.mkdir(parents=True)
    bounds = np.linspace(0, len(items), parts + 1).astype(int)
    for part in range(parts):
        piece = table.slice(bounds[part], bounds[part + 1] - bounds[part])
        pq.write_table(piece, folder / f"items-{part}.parquet", row_group_size=7)
    return folder


def stacked(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    export = open_export(folder)
    parts = list(export.batches(1000))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def checksums(folder: Path) -> dict:
    return {
        n: d
        for s in json.loads((folder / "manifest.json").read_text())["shards"]
        for n, d in s["sha256"].items()
    }


def test_export_of_the_catalogue_is_the_bundles_embeddings(bundle, tmp_path: Path) -> None:
    table = catalogue_table(bundle, tmp_path / "items")
    result = embed_items(bundle, table, tmp_path / "out", batch_rows=5, shard_rows=17, progress=False)
    manifest = json.loads(result.manifest.read_text())
    assert (manifest["bundle_id"], manifest["count"], manifest["cold"]) == (bundle.bundle_id, 60, 0)
    assert len(manifest["shards"]) == 4  # 17 + 17 + 17 + 9 rows
    for name, digest in checksums(tmp_path / "out").items():
        assert sha256_file(tmp_path / "out" / name) == digest
    items, vectors = stacked(tmp_path / "out")
    assert items.tolist() == list(range(60))
    np.testing.assert_array_equal(vectors, bundle.item_embeddings)  # the same vectors, bit for bit
    ids = np.concatenate([np.load(tmp_path / "out" / s["ids"]) for s in manifest["shards"]])
    assert ids.tolist() == bundle.data.item_ids.tolist()


def test_interrupted_export_resumes_where_it_stopped(bundle, tmp_path: Path, monkeypatch) -> None:
    table = catalogue_table(bundle, tmp_path / "items")
    embed_items(bundle, table, tmp_path / "whole", batch_rows=4, shard_rows=10, progress=False)
    encode = ItemEncoder.encode
    calls = {"n": 0}

    def dies_on_the_eighth_batch(self, rows):
        calls["n"] += 1
        if calls["n"] == 8:  # inside shard 3 (10-row shards, 4-row batches: 3 batches each)
            raise KeyboardInterrupt
        return encode(self, rows)

    monkeypatch.setattr(ItemEncoder, "encode", dies_on_the_eighth_batch)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        embed_items(bundle, table, out, batch_rows=4, shard_rows=10, progress=False)
    monkeypatch.setattr(ItemEncoder, "encode", encode)
    assert sorted(p.name for p in out.glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    assert list(out.glob("*.partial")) and not (out / "manifest.json").exists()
    with pytest.raises(RecIndexError, match="already holds an export; pass --resume"):
        embed_items(bundle, table, out, batch_rows=4, shard_rows=10, progress=False)
    with pytest.raises(BundleError, match="not finished"):
        open_export(out)
    kept = (out / "shard-00000.npy").stat().st_mtime_ns
    damaged = out / "shard-00001.npy"
    damaged.write_bytes(damaged.read_bytes()[:-4] + b"\0\0\0\1")  # a shard broken since: written again
    result = embed_items(bundle, table, out, batch_rows=4, shard_rows=10, progress=False, resume=True)
    assert result.shards_kept == [0] and result.shards_written == [1, 2, 3, 4, 5]
    assert (out / "shard-00000.npy").stat().st_mtime_ns == kept
    assert checksums(out) == checksums(tmp_path / "whole")  # the same bytes as an uninterrupted run
    assert not list(out.glob("*.partial"))
    with pytest.raises(RecIndexError, match="shard_rows differ"):
        embed_items(bundle, table, out, batch_rows=4, shard_rows=20, progress=False, resume=True)


def test_processes_split_the_shards(bundle, tmp_path: Path) -> None:
    table = catalogue_table(bundle, tmp_path / "items", parts=3)
    embed_items(bundle, table, tmp_path / "one", shard_rows=8, progress=False)
    first = embed_items(bundle, table, tmp_path / "two", shard_rows=8, progress=False, shard_of=(1, 2))
    assert first.manifest is None and first.shards_written == [1, 3, 5, 7]
    second = embed_items(bundle, table, tmp_path / "two", shard_rows=8, progress=False, shard_of=(0, 2))
    assert second.manifest is not None and second.shards_written == [0, 2, 4, 6]
    assert checksums(tmp_path / "two") == checksums(tmp_path / "one")
    assert parse_shard_of("3/4") == (3, 4)
    with pytest.raises(RecIndexError, match="R/N"):
        parse_shard_of("4/4")


def test_cold_items_are_encoded_from_content(bundle, tmp_path: Path) -> None:
    known = [3, 7]
    cells = ["0|5", "11", *attribute_cells(bundle, known), "4|nope"]
    ids = [10_001, 10_002, *bundle.data.item_ids[known].tolist(), 10_003]
    pq.write_table(pa.table({"item": ids, "item_attr": cells}), tmp_path / "items.parquet")
    result = embed_items(
        bundle, tmp_path / "items.parquet", tmp_path / "out", dtype="float16", progress=False
    )
    assert result.cold == 3
    items, vectors = stacked(tmp_path / "out")
    assert items.tolist() == [-1, -1, 3, 7, -1]
    index = {n: t for t, n in enumerate(bundle.data.item_features.names)}
    tokens = [[index["attr=0"], index["attr=5"]], [index["attr=11"]], [index["attr=4"]]]  # 'nope' unknown
    with torch.no_grad():
        expected = bundle.model.content_vectors(tokens).numpy()
    np.testing.assert_allclose(vectors[[0, 1, 4]], expected, atol=2e-3)  # float16 storage
    np.testing.assert_allclose(vectors[[2, 3]], bundle.item_embeddings[known], atol=2e-3)
    with pytest.raises(BundleError, match="3 of its 5 items are not in the catalogue"):
        build_bundle_index(bundle, "exact", "cold", embeddings=tmp_path / "out")


def test_items_that_cannot_be_encoded_are_refused(bundle, tmp_path: Path) -> None:
    pq.write_table(pa.table({"item": [1, 99_999], "item_attr": ["0", "nope"]}), tmp_path / "a.parquet")
    with pytest.raises(
        RecIndexError, match=r"a.parquet, row 2: item 99999 is not in the catalogue .* no feature"
    ):
        embed_items(bundle, tmp_path / "a.parquet", tmp_path / "out", progress=False)
    pq.write_table(pa.table({"item_id": [1]}), tmp_path / "b.parquet")
    with pytest.raises(RecIndexError, match=r"expected a column named 'item' \(columns found: item_id\)"):
        embed_items(bundle, tmp_path / "b.parquet", tmp_path / "out2", progress=False)


def test_id_only_tower_refuses_cold_items(tiny_bundle, tmp_path: Path) -> None:
    from recindex.config import load_config
    from recindex.pipelines.experiment import run_experiment

    settings = [
        f'data.dataset="{DATASET}"',
        "model.dim=8",
        "model.item_features=false",
        "train.epochs=1",
        "train.threads=1",
        "train.uniform_negatives=8",
    ]
    run_experiment(load_config(None, settings), tmp_path / "ids_only", progress=False)
    ids_only = load_bundle(tmp_path / "ids_only")
    pq.write_table(pa.table({"item": [1, 99_999], "item_attr": ["0", "1"]}), tmp_path / "a.parquet")
    with pytest.raises(RecIndexError, match="item tower reads ids only"):
        embed_items(ids_only, tmp_path / "a.parquet", tmp_path / "out", progress=False)


def test_index_from_the_export_equals_the_index_from_the_bundle(bundle, tiny_bundle, tmp_path: Path) -> None:
    table = catalogue_table(bundle, tmp_path / "items")
    runner = CliRunner()
    out = tmp_path / "vectors"
    embedded = runner.invoke(
        app,
        [
            "embed",
            str(bundle.path),
            "--items",
            str(table),
            "--out",
            str(out),
            "--shard-size",
            "25",
            "--batch-size",
            "8",
            "--quiet",
        ],
    )
    assert embedded.exit_code == 0, embedded.output
    assert "60 items (0 cold" in embedded.output
    _, own, _, _ = build_bundle_index(bundle, "exact", "own", overwrite=True)
    built = runner.invoke(
        app,
        [
            "index",
            "build",
            str(bundle.path),
            "--backend",
            "exact",
            "--name",
            "shards",
            "--embeddings",
            str(out),
            "--overwrite",
        ],
    )
    assert built.exit_code == 0, built.output
    from_shards = load_bundle_index(bundle, "shards")
    queries = bundle.item_embeddings[:9]
    own_found = own.search(queries, k=10, filter="popularity >= 1")  # attributes came along too
    shard_found = from_shards.search(queries, k=10, filter="popularity >= 1")
    np.testing.assert_array_equal(own_found.ids, shard_found.ids)
    np.testing.assert_array_equal(own_found.scores, shard_found.scores)
    other = load_bundle(tiny_bundle("synthetic:n_users=150,n_items=60,n_attributes=12,seed=5"))
    with pytest.raises(BundleError, match="holds vectors of bundle .* another model's vectors"):
        build_bundle_index(other, "exact", "foreign", embeddings=out)
    assert not (other.path / "indexes" / "foreign").exists()


def test_export_killed_with_sigkill_resumes_to_the_same_bytes(bundle, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    rows = 60_000  # cold items: enough work that the export is still running when it is killed
    rng = np.random.default_rng(0)
    cells = [f"{a}|{b}" for a, b in rng.integers(0, 12, (rows, 2)).tolist()]
    pq.write_table(
        pa.table({"item": np.arange(rows) + 10**6, "item_attr": cells}), tmp_path / "items.parquet"
    )
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "recindex.cli",
        "embed",
        str(bundle.path),
        "--items",
        str(tmp_path / "items.parquet"),
        "--out",
        str(out),
        "--shard-size",
        "2000",
        "--batch-size",
        "500",
        "--threads",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "shard-00002.json").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    if (out / "manifest.json").exists():
        pytest.skip("the export finished before it could be killed")
    finished = len(list(out.glob("shard-*.json")))
    assert 3 <= finished < 30
    result = embed_items(
        bundle, tmp_path / "items.parquet", out, shard_rows=2000, batch_rows=500, progress=False, resume=True
    )
    assert len(result.shards_kept) == finished and result.manifest is not None
    embed_items(bundle, tmp_path / "items.parquet", tmp_path / "whole", shard_rows=2000, progress=False)
    assert checksums(out) == checksums(tmp_path / "whole")


def test_content_path_is_the_towers_path_for_items_without_an_id(bundle) -> None:
    import copy

    model = copy.deepcopy(bundle.model)
    model.set_trained_items(np.zeros(bundle.data.n_items, bool))  # every item by its content alone
    features = bundle.data.item_features
    items = [0, 5, 9, 17, 33]
    lists = [features.of(i).tolist() for i in items]
    with torch.no_grad():
        torch.testing.assert_close(
            model.content_vectors(lists), model.item_vectors(torch.as_tensor(items)), rtol=0, atol=1e-6
        )
        # Bags of different lengths (and none) scattered into one padded table: each as if alone.
        ragged = [lists[0][:1], [], lists[1], lists[2][:2], lists[3] + lists[4][:1]]
        together = model.content_vectors(ragged)
        for row, tokens in enumerate(ragged):
            torch.testing.assert_close(
                together[row : row + 1], model.content_vectors([tokens]), rtol=0, atol=0
            )
