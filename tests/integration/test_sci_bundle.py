"""SCI end to end on a small synthetic data set: SymmAligner training writes a plain two-tower bundle,
the `ci` index is built from it (query views and logged queries from the bundle), evaluated, reported on
by `recindex index quality`, served with inserts, and its codes feed a two-stage generative decoder."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recindex.cli import app
from recindex.config import load_config
from recindex.errors import RecIndexError
from recindex.eval.index_eval import evaluate_index
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment
from recindex.pipelines.indexes import build_bundle_index, load_bundle_index
from recindex.sci.index import CIIndex
from recindex.sci.semantic_ids import sci_semantic_ids
from recindex.sci.views import catalogue_query_views, content_query_views
from recindex.serve.app import create_app
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings
from recindex.serve.wal import WriteAheadLog

BASE = [
    'data.dataset="synthetic:n_users=300,n_items=200,n_attributes=20,seed=4"',
    "model.dim=16",
    "model.max_len=10",
    "train.epochs=3",
    "train.batch_size=64",
    "train.threads=1",
    "train.uniform_negatives=32",
]
KEY = {"X-API-Key": "test-key"}
runner = CliRunner()


@pytest.fixture(scope="module")
def sci_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sci")
    config = load_config(None, [*BASE, "sci.symmetric_weight=1.0"])
    result = run_experiment(config, folder / "bundle", progress=False)
    return load_bundle(result.bundle_path)


def test_symmetric_training_writes_a_plain_two_tower_bundle(sci_bundle):
    assert sci_bundle.manifest["model_class"].endswith("TwoTowerModel")
    assert sci_bundle.config.sci.symmetric_weight == 1.0
    assert sci_bundle.item_embeddings.shape == (200, 16)
    assert sci_bundle.metrics["training"]["epochs_run"] == 3


def test_the_ci_index_is_built_from_the_bundle_and_evaluated(sci_bundle):
    folder, built, _, _ = build_bundle_index(
        sci_bundle, "ci:nlist=8,levels=1,codewords=16", "ci", overwrite=True
    )
    index = load_bundle_index(sci_bundle, "ci")
    assert isinstance(index, CIIndex) and len(index) == 200
    # the lists were formed from the query tower's view of the items
    views = catalogue_query_views(sci_bundle.model)
    lists = index.semantic_ids(np.arange(200))[:, 0]
    assert np.array_equal(lists, np.argmax(views @ index.centroids.T, axis=1))
    everything = evaluate_index(sci_bundle, index, "test", params={"nprobe": 8}, single_queries=5)
    assert everything.index["recall@10"] == everything.exact["recall@10"]
    assert everything.cost["index_recall@10"] == 1.0
    some = evaluate_index(sci_bundle, index, "test", params={"nprobe": 1}, single_queries=5)
    assert some.cost["candidates_scored_per_query"] < 200
    quality = runner.invoke(app, ["index", "quality", str(sci_bundle.path), "--index", "ci"])
    assert quality.exit_code == 0, quality.output
    assert "coarse lists" in quality.output and "leaves" in quality.output


def test_the_service_serves_the_ci_index_and_routes_new_items(sci_bundle, tmp_path):
    _, index, _, _ = build_bundle_index(sci_bundle, "ci:nlist=8,levels=1,codewords=16", "ci", overwrite=True)
    version = ServingVersion.of(sci_bundle, index)
    writer = ItemWriter(version, WriteAheadLog(tmp_path / "items.wal").open())
    http = TestClient(
        create_app(ServiceSettings(api_keys=["test-key"]), Recommender(version), writer),
        raise_server_exceptions=False,
    )
    answer = http.post("/v1/recommend", json={"user_id": str(sci_bundle.data.user_ids[0]), "k": 5}).json()
    assert len(answer["items"]) == 5
    names = sci_bundle.data.item_features.names
    tokens = [names[t] for t in sci_bundle.data.item_features.of(3)]
    put = http.put("/v1/items", json={"items": [{"item_id": "fresh", "features": tokens}]}, headers=KEY)
    assert put.status_code == 200, put.text
    vector = sci_bundle.model.content_vectors([list(sci_bundle.data.item_features.of(3))]).detach().numpy()[0]
    top = http.post("/v1/recommend", json={"vector": vector.tolist(), "k": 1}).json()["items"][0]
    assert top["item_id"] == "fresh"
    # the new item's list is the one its query view (the query tower reading its content) is nearest
    view = content_query_views(sci_bundle.model, [list(sci_bundle.data.item_features.of(3))])[0]
    fresh = version.internal_id("fresh")
    assert index.semantic_ids([fresh])[0, 0] == np.argmax(index.centroids @ view)
    # and a restart that replays the log places it there again
    _, again, _, _ = build_bundle_index(sci_bundle, "ci:nlist=8,levels=1,codewords=16", "ci", overwrite=True)
    restarted = ServingVersion.of(sci_bundle, again)
    ItemWriter(restarted, WriteAheadLog(tmp_path / "items.wal").open()).replay()
    assert again.semantic_ids([restarted.internal_id("fresh")])[0, 0] == np.argmax(again.centroids @ view)


def test_ci_codes_are_a_two_stage_decoders_index(sci_bundle, tmp_path):
    config = load_config(
        None,
        [
            *BASE,
            'model.kind="uri"',
            'uri.index="sci"',
            f'uri.init_from="{sci_bundle.path}"',
            "uri.k=4",
            "uri.layers=2",
            "uri.layer_epochs=2",
            "uri.batch_size=64",
            "uri.generate_items=true",
            "uri.ranker_epochs=0",
        ],
    )
    result = run_experiment(config, tmp_path / "two-stage", progress=False)
    codes = load_bundle(result.bundle_path).model.item_codes.numpy()[:, :2]
    expected = sci_semantic_ids(sci_bundle.model, 4, 2, seed=config.train.seed)
    assert np.array_equal(codes, expected)
    assert codes.min() >= 0 and codes.max() < 4


def test_symmetric_training_is_refused_beside_mfli_or_uri():
    # refused when the config is read, before any data is loaded
    for family in ('model.kind="mfli"', 'model.kind="uri"'):
        with pytest.raises(RecIndexError, match=r"\[sci\]"):
            load_config(None, [*BASE, "sci.symmetric_weight=1.0", family])
