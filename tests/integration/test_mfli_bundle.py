"""An MFLI run end to end: trained with `[mfli] enabled`, saved as a bundle, loaded back, and served
by its own codebook through the bundle's index and the evaluation protocol."""

import json

import numpy as np
from typer.testing import CliRunner

from recindex.cli import app
from recindex.config import load_config
from recindex.eval.index_eval import evaluate_index
from recindex.mfli.model import MFLIModel
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment
from recindex.pipelines.indexes import build_bundle_index, load_bundle_index

DATASET = "synthetic:n_users=300,n_items=200,n_attributes=20,seed=4"


def test_an_mfli_bundle_trains_saves_loads_and_serves(tmp_path):
    overrides = [
        f'data.dataset="{DATASET}"',
        "model.dim=16",
        "model.max_len=10",
        "train.epochs=4",
        "train.batch_size=64",
        "train.threads=1",
        "train.uniform_negatives=32",
        'model.kind="mfli"',
        "mfli.codewords=4",
        "mfli.quant_start=1",
        "mfli.level_gap=1",
    ]
    result = run_experiment(load_config(None, overrides), tmp_path / "bundle", progress=False)
    bundle = load_bundle(result.bundle_path)
    assert isinstance(bundle.model, MFLIModel) and bundle.manifest["model_class"].endswith("MFLIModel")
    assert bundle.item_embeddings.shape == (200, 3 * 16) == (200, bundle.manifest["embedding"]["dim"])
    np.testing.assert_allclose(
        bundle.model.item_vectors().detach().numpy(), bundle.item_embeddings, atol=1e-5
    )

    folder, index, _, _ = build_bundle_index(bundle, "mfli", search_params={"leaves": 16})
    np.testing.assert_array_equal(index.codebook, bundle.model.codebook.detach().numpy()[:2])
    loaded = load_bundle_index(bundle, folder.name)
    report = evaluate_index(bundle, loaded, "test")
    assert report.cost["index_recall@10"] >= 0.9
    assert abs(report.index["recall@10"] - report.exact["recall@10"]) <= 0.05

    # the partition it serves from: APE, bucket sizes, codeword use, and a histogram
    quality = CliRunner().invoke(
        app,
        [
            "index",
            "quality",
            str(bundle.path),
            "--index",
            folder.name,
            "--plot",
            str(tmp_path / "leaves.png"),
            "--json",
            str(tmp_path / "quality.json"),
        ],
    )
    assert quality.exit_code == 0, quality.output
    written = json.loads((tmp_path / "quality.json").read_text())
    facets = ("joint facet", "id facet", "content facet")  # named as mfli.facets names them
    assert set(written) == {*facets, "codeword_use"}
    assert all(0 <= written[f]["ape"] <= np.log(200) for f in facets)
    assert sum(written["joint facet"][k] for k in ("used", "empty")) == written["joint facet"]["buckets"]
    assert "level 1: joint " in quality.output and ", content " in quality.output
    assert (tmp_path / "leaves.png").stat().st_size > 1000
