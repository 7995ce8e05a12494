"""What the runner measures beside the protocol's metrics, end to end on a tiny synthetic experiment:
recall on tail targets and short histories, the partitions of an index (APE), the popularity baseline;
and `--dry-run`, which plans every checked-in experiment file without training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import RecIndexError
from recindex.experiments import load_spec
from recindex.experiments.measures import subset_recalls
from recindex.experiments.plan import plan

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
[experiment]
name = "small"
seeds = 1
metrics = ["recall@10", "tail_recall@10", "short_history_recall@10", "ape:IVF lists"]
set.model = { dim = 16, max_len = 10, layers = 1 }
set.train = { epochs = 1, batch_size = 64, uniform_negatives = 16 }
set.eval = { ks = [5, 10, 20] }

[datasets.synth]
dataset = "synthetic:n_users=200,n_items=300,n_clusters=6,n_attributes=12,seed=3"

[families.two_tower]

[indexes.ivf]
spec = "faiss:IVF16,Flat"
sweep.nprobe = [2]

[indexes.popularity]
spec = "popularity"

[[comparisons]]
name = "two-tower vs popularity"
a = { family = "two_tower" }
b = { family = "two_tower", index = "popularity" }
"""


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_subset_recalls_count_hits_within_each_subset():
    ranks = np.array([0, 12, 3, 40, 9])
    subsets = {"tail": np.array([True, True, False, False, False]), "short_history": np.zeros(5, bool)}
    assert subset_recalls(ranks, subsets, (10, 50)) == {"tail_recall@10": 0.5, "tail_recall@50": 1.0}


def test_tail_recall_ape_and_the_popularity_baseline_reach_the_report(tmp_path):
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL)
    out = tmp_path / "run"
    _invoke("experiment", "run", str(spec), "--out", str(out), "--quiet")
    result = json.loads((out / "cells" / "synth.two_tower.default.s0.json").read_text())
    by_index = {c["index"]: c for c in result["configurations"]}
    assert list(by_index) == ["exact", "ivf", "popularity"]
    for configuration in by_index.values():
        assert 0.0 <= configuration["test"]["tail_recall@10"] <= configuration["test"]["tail_recall@20"] <= 1
        assert "short_history_recall@10" in configuration["test"]
    ivf = by_index["ivf"]["cost"]
    assert ivf["ape:IVF lists"] > 0.0 and 1 <= ivf["buckets_used:IVF lists"] <= 16
    assert ivf["largest_bucket:IVF lists"] >= 300 / 16
    popularity = by_index["popularity"]
    assert popularity["test"]["recall@10"] != by_index["exact"]["test"]["recall@10"]
    # the same cases: the ranks of both cover every test case
    with np.load(out / "cells" / "synth.two_tower.default.s0.npz") as ranks:
        assert ranks[popularity["ranks"]].shape == ranks[by_index["exact"]["ranks"]].shape
    report = (out / "report" / "report.md").read_text()
    assert "| two_tower | default | popularity | - |" in report
    assert "### two-tower vs popularity: A = two_tower, B = two_tower+popularity" in report

    # The results page: the run's tables, verdicts and plots, and the experiment not run yet.
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "small.toml").write_text(SMALL)
    (experiments / "other.toml").write_text(SMALL.replace('name = "small"', 'name = "other"'))
    page_path = tmp_path / "docs" / "results.md"
    _invoke(
        "experiment", "results", str(out), "--out", str(page_path), "--experiments", str(experiments)
    )
    page = page_path.read_text()
    assert page.startswith("# Results\n") and f"recindex experiment results {out} --out {page_path}" in page
    assert "## Experiment small" in page and "### synth: test split, mean ± 95% CI over 1 seed(s)" in page
    assert "| two_tower | default | popularity | - |" in page and "commit:" in page
    assert "#### two-tower vs popularity" in page and "verdict (seeds)" in page
    figure = "figures/results/small/recall_candidates_synth.png"
    assert f"]({figure})" in page and (tmp_path / "docs" / figure).is_file()
    assert "`other` (1 cells at 1 seeds): `nice -n 19 recindex experiment run" in page
    assert "`small` (" not in page.split("## Not run yet")[1]


def test_a_popularity_baseline_takes_no_sweep(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SMALL.replace('spec = "popularity"', 'spec = "popularity"\nsweep.k = [1]'))
    with pytest.raises(RecIndexError, match=r"\[indexes.popularity\] spec: the popularity baseline"):
        load_spec(spec)


def test_dry_run_prints_the_cells_and_trains_nothing(tmp_path):
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL.replace("seeds = 1", "seeds = 2"))
    out = tmp_path / "run"
    result = _invoke("experiment", "run", str(spec), "--out", str(out), "--dry-run")
    assert "synth.two_tower.default.s0 [two_tower]; exact, ivf: 1 point(s), each, popularity: baseline" in (
        result.output
    )
    assert "2 trainings, 2 validation operating points, at most 6 test reads" in result.output
    assert not out.exists()


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_every_checked_in_experiment_file_plans(path):
    planned = plan(path, seeds=1)
    assert planned.cells and planned.lines()[-1].startswith(f"{len(planned.cells)} trainings")
    ids = [cell.id for cell in planned.cells]
    # the cells a cell starts from come first (the runner's order)
    assert all(ids.index(c.depends_on) < ids.index(c.id) for c in planned.cells if c.depends_on)
