"""The run config's [index] section: kept in the bundle manifest, and built by `recindex index build`."""

import json
import shutil

import pytest
from tests.conftest import tiny_settings
from typer.testing import CliRunner

from recindex.cli import app
from recindex.config import load_config
from recindex.errors import BundleError, InvalidRequest
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment
from recindex.pipelines.indexes import check_index, load_bundle_index

DATASET = "synthetic:n_users=150,n_items=60,seed=4"
INDEX = ['index.backend="faiss"', 'index.faiss.factory="HNSW16"', "index.faiss.ef_construction=40"]
runner = CliRunner()


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    """A bundle trained with an [index] section."""
    config = load_config(None, [*tiny_settings(DATASET), *INDEX, "index.search={ef=48}"], check_index)
    out = tmp_path_factory.mktemp("configured") / "bundle"
    run_experiment(config, out, progress=False)
    return out, config


def test_the_index_section_round_trips_through_the_bundle_manifest(configured):
    path, config = configured
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["config"]["index"] == {
        "backend": "faiss",
        "search": {"ef": 48},
        "check_queries": 500,
        "warn_recall": 0.9,
        "min_recall": 0.0,
        "faiss": {"factory": "HNSW16", "ef_construction": 40},
    }
    assert load_bundle(path).config.index == config.index


def test_a_manifest_written_before_the_index_section_still_loads(configured, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(configured[0], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["config"]["index"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(old).config.index.backend == ""
    result = runner.invoke(app, ["index", "build", str(old)])
    assert result.exit_code != 0 and isinstance(result.exception, BundleError)
    assert "no [index] backend; pass --backend SPEC" in str(result.exception)


def test_index_build_without_backend_builds_the_configs_index(configured):
    path, _ = configured
    result = runner.invoke(app, ["index", "build", str(path), "--param", "ef=64"])
    assert result.exit_code == 0, result.output
    assert "building the bundle config's [index]: faiss:HNSW16" in result.output
    manifest = json.loads((path / "indexes" / "faiss-HNSW16" / "manifest.json").read_text())
    assert manifest["spec"] == "faiss:HNSW16"
    assert manifest["search_params"]["ef"] == 64  # --param over the config's search
    index = load_bundle_index(load_bundle(path), "faiss-HNSW16")
    assert index.ef_construction == 40  # the [index.faiss] table's, which the spec string cannot carry

    again = runner.invoke(app, ["index", "build", str(path), "--name", "from-config"])
    assert again.exit_code == 0, again.output
    assert load_bundle_index(load_bundle(path), "from-config").search_params["ef"] == 48

    given = runner.invoke(app, ["index", "build", str(path), "--backend", "exact", "--name", "given"])
    assert given.exit_code == 0 and "config's [index]" not in given.output


def test_a_bad_index_section_in_a_manifest_is_refused_naming_it(configured, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(configured[0], bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["config"]["index"]["faiss"]["ef_construction"] = "wide"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["index", "build", str(bad), "--name", "bad"])
    assert isinstance(result.exception, InvalidRequest)
    assert "manifest.json [index]" in str(result.exception) and "ef_construction: expected int" in str(
        result.exception
    )
    assert not (bad / "indexes" / "bad").exists()


def test_train_refuses_a_bad_index_section_before_training(tmp_path):
    out = tmp_path / "never"
    bad = [*tiny_settings(DATASET), "index.ci.nlist=many"]
    settings = [arg for setting in bad for arg in ("--set", setting)]
    result = runner.invoke(app, ["train", *settings, "--out", str(out), "--quiet"])
    assert isinstance(result.exception, InvalidRequest)
    assert "[index.ci]: nlist: expected int, got 'many'" in str(result.exception)
    assert not out.exists()
