"""Indexes inside bundles: build, list, evaluate through them, and refuse mismatches."""

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import BundleError, InvalidRequest
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import build_bundle_index, load_bundle_index

DATASET = "synthetic:n_users=200,n_items=80,seed=3"
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle_path(tiny_bundle):
    return tiny_bundle(DATASET)


def test_build_list_and_evaluate_through_an_index(bundle_path, tmp_path):
    result = runner.invoke(
        app, ["index", "build", str(bundle_path), "--backend", "faiss:HNSW16", "--param", "ef=64"]
    )
    assert result.exit_code == 0, result.output
    assert (bundle_path / "indexes" / "faiss-HNSW16" / "manifest.json").is_file()
    manifest = json.loads((bundle_path / "indexes" / "faiss-HNSW16" / "manifest.json").read_text())
    assert manifest["bundle_id"] == load_bundle(bundle_path).bundle_id
    assert manifest["search_params"]["ef"] == 64

    listed = runner.invoke(app, ["index", "list", str(bundle_path)])
    assert listed.exit_code == 0 and "faiss-HNSW16" in listed.output

    out = tmp_path / "eval.json"
    evaluated = runner.invoke(
        app, ["evaluate", str(bundle_path), "--index", "faiss-HNSW16", "--json", str(out)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(out.read_text())
    # 80 items and ef >= k: the graph search is exhaustive, so it must agree with exact search.
    assert report["cost"]["index_recall@10"] == 1.0
    assert report["metrics"]["recall@10"] == report["exact"]["recall@10"]
    assert report["cost"]["candidates_scored_per_query"] > 0
    assert report["cost"]["single_query_p50_ms"] > 0


def test_exact_int8_index_keeps_metrics_close(bundle_path):
    bundle = load_bundle(bundle_path)
    build_bundle_index(bundle, "exact:int8", "int8", overwrite=True)
    from recindex.eval.index_eval import evaluate_index

    result = evaluate_index(bundle, load_bundle_index(bundle, "int8"), "valid", single_queries=5)
    assert result.cost["index_recall@10"] >= 0.9
    assert abs(result.index["recall@10"] - result.exact["recall@10"]) <= 0.05


def test_metric_that_differs_from_the_model_is_refused(bundle_path):
    with pytest.raises(InvalidRequest, match="rank them differently"):
        build_bundle_index(load_bundle(bundle_path), "exact", "l2", metric="l2")
    result = runner.invoke(app, ["index", "build", str(bundle_path), "--backend", "exact", "--metric", "l2"])
    assert result.exit_code != 0


def test_index_of_another_bundle_is_refused(bundle_path, tmp_path):
    bundle = load_bundle(bundle_path)
    build_bundle_index(bundle, "exact", "plain", overwrite=True)
    other = tmp_path / "other"
    shutil.copytree(bundle_path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["bundle_id"] = "another-model-version"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="mix model versions"):
        load_bundle_index(load_bundle(other), "plain")
    with pytest.raises(BundleError, match="has no index 'missing'"):
        load_bundle_index(bundle, "missing")


def test_corrupt_index_file_is_refused(bundle_path, tmp_path):
    bundle = load_bundle(bundle_path)
    folder, _, _, _ = build_bundle_index(bundle, "exact", "to-corrupt", overwrite=True)
    with open(folder / "vectors.npy", "r+b") as handle:
        handle.seek(150)
        handle.write(b"\xff\xfe")
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle_index(bundle, "to-corrupt")


def test_existing_index_is_not_overwritten_silently(bundle_path):
    bundle = load_bundle(bundle_path)
    build_bundle_index(bundle, "exact", "twice", overwrite=True)
    with pytest.raises(BundleError, match="--overwrite"):
        build_bundle_index(bundle, "exact", "twice")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "foo"], "unknown index backend 'foo'"),
        (["--backend", "faiss:XYZ12"], "could not parse index string XYZ12"),
        (["--backend", "faiss:HNSW16", "--option", "efc=3"], "unknown options \\['efc'\\]"),
        (["--backend", "sharded:x:exact"], "sharded:x:exact"),
        (["--backend", "faiss:HNSW16", "--param", "ef=-3"], "must be a positive integer"),
        (["--backend", "faiss:IVF4096,Flat"], "at least 4,096 vectors"),
    ],
)
def test_bad_build_requests_get_one_clear_line(bundle_path, args, message):
    result = runner.invoke(app, ["index", "build", str(bundle_path), "--name", "bad", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, (InvalidRequest, BundleError))
    assert re.search(message, str(result.exception)), str(result.exception)
    assert not (bundle_path / "indexes" / "bad").exists(), "a failed build leaves nothing behind"


def test_milvus_index_moves_with_its_bundle(bundle_path, tmp_path):
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'recindex[milvus]')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    copy = tmp_path / "copy"
    shutil.copytree(bundle_path, copy)
    _, index, _, _ = build_bundle_index(load_bundle(copy), "milvus:FLAT", "mv")
    queries = load_bundle(copy).item_embeddings[:3]
    before = index.search(queries, 5)
    index.close()  # a Milvus Lite file is open in one process (and one client) at a time
    moved = tmp_path / "moved"
    shutil.move(copy, moved)
    reloaded = load_bundle_index(load_bundle(moved), "mv")
    try:
        np.testing.assert_array_equal(reloaded.search(queries, 5).ids, before.ids)
        assert reloaded.uri.startswith(str(moved))
    finally:
        reloaded.close()
