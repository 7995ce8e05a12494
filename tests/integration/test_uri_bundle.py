"""URI runs end to end on a small synthetic data set: the learned index and a two-stage baseline, each
trained with `[uri] enabled`, saved as a bundle, loaded back, served by the `uri` index through the
evaluation protocol, and reported on by `recindex index quality`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.config import load_config
from recindex.data.splits import split_for
from recindex.errors import RecIndexError
from recindex.eval.evaluate import encode_cases
from recindex.eval.index_eval import evaluate_index
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment
from recindex.pipelines.indexes import build_bundle_index, load_bundle_index
from recindex.uri.model import URIModel

DATASET = "synthetic:n_users=300,n_items=200,n_attributes=20,seed=4"
BASE = [
    f'data.dataset="{DATASET}"',
    "model.dim=16",
    "model.max_len=10",
    "train.epochs=3",
    "train.batch_size=64",
    "train.threads=1",
    "train.uniform_negatives=32",
    'model.kind="uri"',
    "uri.k=4",
    "uri.layers=2",
    "uri.layer_epochs=3",
    "uri.batch_size=64",
    "uri.ranker_epochs=2",
    "uri.beam=4",
]


@pytest.fixture(scope="module")
def uri_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uri")
    result = run_experiment(load_config(None, BASE), folder / "bundle", progress=False)
    return load_bundle(result.bundle_path)


def test_a_uri_bundle_learns_a_balanced_index_and_serves_it(uri_bundle, tmp_path):
    bundle = uri_bundle
    assert isinstance(bundle.model, URIModel) and bundle.manifest["model_class"].endswith("URIModel")
    assert bundle.item_embeddings.shape == (200, 3 * 16) == (200, bundle.manifest["embedding"]["dim"])
    codes = bundle.model.item_codes.numpy()
    assert codes.shape == (200, 2) and codes.min() >= 0 and codes.max() < 4
    # balanced assignment: at most ceil(n / k) items per token, under each parent
    assert np.bincount(codes[:, 0], minlength=4).max() <= 50
    for parent in range(4):
        under = codes[codes[:, 0] == parent, 1]
        assert np.bincount(under, minlength=4).max() <= -(-len(under) // 4)
    training = bundle.metrics["uri"]
    # 3 epochs per layer, then the final fit of the query end to the finished index (3 more)
    assert [r["layer"] for r in training["decoder"]["history"]] == [1.0] * 3 + [2.0] * 3 + [3.0] * 3
    assert training["ranker"]["epochs_run"] >= 1

    folder, index, _, _ = build_bundle_index(bundle, "uri")
    assert index.search_params == {"beam": 4, "rank": "ranker"}
    loaded = load_bundle_index(bundle, folder.name)
    narrow = evaluate_index(bundle, loaded, "test", single_queries=5)
    wide = evaluate_index(bundle, loaded, "test", params={"beam": 16}, single_queries=0)
    # the evaluation asks for 100 of 200 items (plus the history): a beam of 4 of 16 leaves (about 50
    # items) is filled from the further leaves it needs, which count in its candidates
    assert 100 <= narrow.cost["candidates_scored_per_query"] < 0.75 * 200
    cases = split_for(bundle.config.data, bundle.data).eval_cases("test")
    few = loaded.search(encode_cases(bundle.model, cases).numpy()[:50], 10)
    assert few.scored.mean() < 0.5 * 200 and (few.ids >= 0).all()  # asked for 10: the beam's leaves
    assert wide.cost["index_recall@10"] == pytest.approx(1.0)  # every leaf: exact search
    assert wide.index["recall@10"] == pytest.approx(wide.exact["recall@10"])

    report = tmp_path / "quality.json"
    quality = CliRunner().invoke(
        app, ["index", "quality", str(bundle.path), "--index", folder.name, "--json", str(report)]
    )
    assert quality.exit_code == 0, quality.output
    rows = json.loads(report.read_text())
    assert set(rows) == {"layer 1", "leaves"}
    assert rows["layer 1"]["used"] == 4 and rows["leaves"]["collisions"] >= 200 - 16


def test_a_two_stage_baseline_learns_a_fixed_index_and_ranks_items_itself(uri_bundle, tmp_path):
    overrides = [*BASE, "uri.index=kmeans_balanced", "uri.generate_items=true", "uri.ranker_epochs=0"]
    result = run_experiment(load_config(None, overrides), tmp_path / "two-stage", progress=False)
    bundle = load_bundle(result.bundle_path)
    sizes = bundle.model.decoder.sizes
    assert sizes[:2] == [4, 4] and sizes[2] >= 200 // 16  # the item token numbers a leaf's items
    codes = bundle.model.item_codes.numpy()
    assert len(np.unique(codes, axis=0)) == 200  # every full code is one item
    _, index, _, _ = build_bundle_index(bundle, "uri")
    generated = evaluate_index(
        bundle, index, "test", params={"rank": "decoder", "beam": 10}, single_queries=0
    )
    assert generated.cost["candidates_scored_per_query"] >= 10
    assert 0 <= generated.index["recall@10"] <= 1
    # decoder training lowered its loss
    history = bundle.metrics["uri"]["decoder"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]

    # "w/ URI index": the same baseline on the learned index of a URI bundle of the same split
    with_uri = [
        *overrides[:-3],
        'uri.index="bundle"',
        f'uri.index_bundle="{uri_bundle.path}"',
        "uri.generate_items=true",
        "uri.ranker_epochs=0",
    ]
    run = run_experiment(load_config(None, with_uri), tmp_path / "with-uri", progress=False)
    handed = load_bundle(run.bundle_path).model.item_codes.numpy()[:, :2]
    np.testing.assert_array_equal(handed, uri_bundle.model.item_codes.numpy())


def test_runs_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(RecIndexError, match="URI bundle"):
        run_experiment(
            load_config(None, [*BASE, f'uri.index="{tmp_path / "missing"}"']), None, progress=False
        )
    with pytest.raises(RecIndexError, match="both enabled"):
        # the switches of configs written before model.kind: two families at once are refused
        run_experiment(load_config(None, ["uri.enabled=true", "mfli.enabled=true"]), None, progress=False)
