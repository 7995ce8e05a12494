"""End to end on a small synthetic dataset: train -> bundle -> reload -> evaluate/recommend, and errors."""

import json

import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.config import load_config
from recindex.errors import BundleError
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import evaluate_bundle, run_experiment

SETTINGS = [
    'data.dataset="synthetic:n_users=200,n_items=80,seed=2"',
    "model.dim=16",
    "model.max_len=10",
    "train.epochs=2",
    "train.batch_size=64",
    "train.threads=1",
    "train.uniform_negatives=32",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "bundle"
    result = run_experiment(load_config(None, SETTINGS), out, progress=False)
    return out, result


def test_reloaded_bundle_reproduces_test_metrics_exactly(trained):
    out, result = trained
    bundle = load_bundle(out)
    assert evaluate_bundle(bundle, "test") == result.test
    manifest = bundle.manifest
    assert manifest["embedding"] == {"dim": 16, "metric": "ip", "normalized": True, "temperature": 0.05}
    assert manifest["dataset"]["fingerprint"] == result.data.fingerprint()
    assert set(manifest["files"]) >= {"weights.pt", "item_embeddings.npy", "metrics.json", "data/items.npy"}


def test_corrupt_bundle_is_refused(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    with open(copy / "item_embeddings.npy", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="item_embeddings.npy is corrupt"):
        load_bundle(copy)
    (copy / "item_embeddings.npy").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match=r"runs/missing does not exist$"):
        load_bundle(tmp_path / "runs" / "missing")


def test_mismatched_weights_are_refused(trained, tmp_path):
    out, _ = trained
    import shutil

    from recindex.hashing import sha256_file

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model_shape"]["n_items"] += 1
    manifest["files"]["weights.pt"] = sha256_file(copy / "weights.pt")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError):
        load_bundle(copy)


def test_cli_train_evaluate_recommend(tmp_path):
    runner = CliRunner()
    out = tmp_path / "b"
    args = ["train", "--out", str(out), "--quiet", "--seed", "3"]
    for setting in SETTINGS:
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "recall@10" in result.output and "test" in result.output
    result = runner.invoke(app, ["evaluate", str(out), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "identical to the training run" in result.output
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["cases"] > 0
    result = runner.invoke(app, ["recommend", str(out), "--user", "5", "-k", "4"])
    assert result.exit_code == 0, result.output
    assert "top 4" in result.output


def test_cli_user_errors_are_one_line_not_tracebacks(tmp_path, trained, capsys):
    from recindex.cli import main

    out, _ = trained
    cases = [
        (["recommend", str(out), "--user", "no-such-user"], "unknown user"),
        (["evaluate", str(tmp_path)], "no manifest.json"),
        (["train", "--out", str(tmp_path / "x"), "--set", "train.nope=1"], "unknown key"),
        (["train", "--out", str(tmp_path / "x"), "--dataset", "no-such-data"], "unknown dataset"),
        (["data", "stats", str(tmp_path / "missing.csv")], "unknown dataset"),
    ]
    for argv, message in cases:
        import sys

        sys.argv = ["recindex", *argv]
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2, argv
        error = " ".join(capsys.readouterr().err.split())
        assert message in error and "Traceback" not in error, (argv, error)


def test_train_refuses_to_overwrite_a_bundle(trained):
    out, _ = trained
    with pytest.raises(BundleError, match="already exists"):
        run_experiment(load_config(None, SETTINGS), out, progress=False)
