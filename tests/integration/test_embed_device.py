"""`recindex embed --device`: where the item tower runs. The CPU is tested everywhere; the GPU test runs
where torch sees a GPU and skips with the reason elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.integration.test_embed_export import DATASET, catalogue_table, stacked
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import RecIndexError
from recindex.pipelines import load_bundle
from recindex.pipelines.embed import embed_items

NO_GPU = "torch sees no GPU on this machine (the GPU path runs where one is present)"


@pytest.fixture
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle(DATASET))  # a fresh load per test: the encoder moves its model


def test_embed_on_the_cpu_by_name_gives_the_bundles_vectors(bundle, tiny_bundle, tmp_path: Path) -> None:
    table = catalogue_table(bundle, tmp_path / "items")
    result = CliRunner().invoke(
        app,
        [
            "embed", str(tiny_bundle(DATASET)), "--items", str(table), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--quiet", "--threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, vectors = stacked(tmp_path / "out")
    np.testing.assert_array_equal(vectors, bundle.item_embeddings)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("cuda:x", "--device = 'cuda:x'"),
    ],
)
def test_a_device_setting_that_names_nothing_is_refused(bundle, tmp_path: Path, device, message) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        message = "expected cuda:N with N a GPU number"
    with pytest.raises(RecIndexError, match=message):
        embed_items(bundle, catalogue_table(bundle, tmp_path / "items"), tmp_path / "out", device=device)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU: the refusal is for one without"
)
def test_a_gpu_asked_for_where_there_is_none_is_refused(bundle, tmp_path: Path) -> None:
    with pytest.raises(RecIndexError, match="--device = 'cuda', but torch sees no GPU"):
        embed_items(bundle, catalogue_table(bundle, tmp_path / "items"), tmp_path / "out", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_embed_on_the_gpu_matches_the_cpu(bundle, tmp_path: Path) -> None:
    table = catalogue_table(bundle, tmp_path / "items")
    result = embed_items(bundle, table, tmp_path / "out", batch_rows=7, progress=False, device="cuda")
    assert next(bundle.model.parameters()).device.type == "cuda"
    assert result.rows_encoded == bundle.data.n_items
    _, vectors = stacked(tmp_path / "out")
    np.testing.assert_allclose(vectors, bundle.item_embeddings, rtol=1e-4, atol=1e-5)
