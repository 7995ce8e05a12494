"""Every index build checks itself against exact search, stores the figures, and warns or fails below a
threshold with the parameter value that would reach it."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import CheckSettings, build_bundle_index, load_bundle_index
from recindex.pipelines.self_check import IndexCheckFailed, check_queries, exact_top, recall_against

# Enough items that one IVF cell of 16 holds far fewer than exact search's top 100 spread over cells.
DATASET = "synthetic:n_users=300,n_items=2000,n_attributes=12,seed=9"
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle_path(tiny_bundle):
    return tiny_bundle(DATASET)


def test_a_good_index_reports_its_recall_and_keeps_it_in_its_manifest(bundle_path):
    built = runner.invoke(app, ["index", "build", str(bundle_path), "--backend", "exact", "--overwrite"])
    assert built.exit_code == 0, built.output
    assert "self-check: index recall@10 1.000, @100 1.000" in built.output
    assert "validation users" in built.output and "warning" not in built.output
    manifest = json.loads((bundle_path / "indexes" / "exact" / "manifest.json").read_text())
    check = manifest["self_check"]
    assert check["recall_at_k"] == 1.0 and check["k"] == 100 and check["source"] == "validation users"
    assert check["queries"] == 300 and check["candidates_per_query"] == 2000  # every validation user
    listed = runner.invoke(app, ["index", "list", str(bundle_path)])
    assert listed.exit_code == 0 and "1.000" in listed.output


def test_a_poor_index_warns_with_the_parameter_that_reaches_the_threshold(bundle_path):
    args = ["index", "build", str(bundle_path), "--backend", "faiss:IVF16,Flat", "--param", "nprobe=1"]
    built = runner.invoke(app, [*args, "--name", "poor", "--overwrite"])
    assert built.exit_code == 0, built.output
    text = " ".join(built.output.split())
    assert "warning: index recall@100" in text and "is below 0.90" in text
    manifest = json.loads((bundle_path / "indexes" / "poor" / "manifest.json").read_text())
    check = manifest["self_check"]
    assert check["recall_at_k"] < 0.9
    suggestion = check["suggestion"]
    assert (
        suggestion["reaches"]
        and suggestion["nprobe"] > 1
        and f"--param nprobe={suggestion['nprobe']}" in text
    )

    # The suggested value does reach the threshold, measured independently of the sweep.
    bundle = load_bundle(bundle_path)
    queries = check_queries(bundle)
    truth = exact_top(bundle.item_embeddings, "ip", queries.vectors, 100)
    index = load_bundle_index(bundle, "poor")
    found = index.search(queries.vectors, 100, params={"nprobe": suggestion["nprobe"]}).ids
    assert recall_against(found, truth, 100) >= 0.9
    assert recall_against(index.search(queries.vectors, 100).ids, truth, 100) == pytest.approx(
        check["recall_at_k"]
    )


def test_min_recall_fails_the_build_and_stores_nothing(bundle_path):
    args = ["index", "build", str(bundle_path), "--backend", "faiss:IVF16,Flat", "--param", "nprobe=1"]
    failed = runner.invoke(app, [*args, "--name", "refused", "--min-recall", "0.95"])
    assert failed.exit_code != 0 and isinstance(failed.exception, IndexCheckFailed)
    text = str(failed.exception)
    assert "not stored" in text and "--param nprobe=" in text
    assert not (bundle_path / "indexes" / "refused").exists()
    with pytest.raises(IndexCheckFailed):
        build_bundle_index(
            load_bundle(bundle_path),
            "faiss:IVF16,Flat",
            "refused",
            search_params={"nprobe": 1},
            check=CheckSettings(min_recall=0.95),
        )


def test_the_check_can_be_skipped_and_its_queries_are_validation_users(bundle_path):
    bundle = load_bundle(bundle_path)
    _, _, _, check = build_bundle_index(
        bundle, "exact", "unchecked", overwrite=True, check=CheckSettings(queries=0)
    )
    assert check is None
    assert "self_check" not in json.loads(
        (bundle_path / "indexes" / "unchecked" / "manifest.json").read_text()
    )
    queries = check_queries(bundle, 50)
    assert queries.source == "validation users" and queries.vectors.shape == (
        50,
        bundle.item_embeddings.shape[1],
    )
    assert np.isfinite(queries.vectors).all()
