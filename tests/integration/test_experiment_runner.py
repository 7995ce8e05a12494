"""A tiny experiment end to end through the command line: two overrides x two seeds on synthetic data, an
index sweep (every nprobe) and an index chosen on validation (a target), two named comparisons; then
`recindex report`, and a rerun that is served from the cache without training."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import RecIndexError
from recindex.experiments import RunOptions, load_spec, runner
from recindex.experiments.cell import run_cell

TINY = """
[experiment]
name = "tiny"
description = "Self-attention against mean pooling on a small synthetic set."
seeds = 2
metrics = ["recall@10", "ndcg@10", "coverage@10"]
set.model = { dim = 16, max_len = 10, layers = 1 }
set.train = { epochs = 2, batch_size = 64, uniform_negatives = 16 }
set.eval = { ks = [5, 10, 20] }

[datasets.synth]
dataset = "synthetic:n_users=200,n_items=300,n_clusters=6,n_attributes=12,seed=3"

[families.two_tower]

[overrides.attention]
[overrides.mean]
set.model.encoder = "mean"

[indexes.ivf]
spec = "faiss:IVF16,Flat"
sweep.nprobe = [1, 2, 16]

[indexes.ivf_target]
spec = "faiss:IVF16,Flat"
sweep.nprobe = [1, 2, 4, 16]
choose = "target"
target = 0.9
select_metric = "index_recall@10"

[[comparisons]]
name = "mean pooling vs self-attention"
a = { family = "two_tower", override = "mean" }
b = { family = "two_tower", override = "attention" }
metrics = ["recall@10", "ndcg@10"]

[[comparisons]]
name = "IVF vs exact search"
a = { family = "two_tower", index = "ivf" }
b = { family = "two_tower" }
"""


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_tiny_experiment_runs_reports_and_reruns_from_cache(tmp_path, monkeypatch):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    out = tmp_path / "run"
    first = _invoke("experiment", "run", str(spec), "--out", str(out), "--quiet", "--no-report")
    assert "4 cells: 4 trained, 4 evaluated, 0 read from the cache, 0 failed" in first.output

    record = json.loads((out / "run.json").read_text())
    cells = {c["id"]: json.loads((out / "cells" / f"{c['id']}.json").read_text()) for c in record["cells"]}
    assert sorted(cells) == [f"synth.two_tower.{o}.s{s}" for o in ("attention", "mean") for s in (0, 1)]
    for result in cells.values():
        indexes = [c["index"] for c in result["configurations"]]
        # exact, every nprobe of the sweep, one setting chosen on validation: test read once for each
        assert indexes == ["exact", "ivf", "ivf", "ivf", "ivf_target"]
        assert len(result["operating_points"]["ivf_target"]["points"]) == 4
        assert result["config"]["train"]["seed"] == result["cell"]["seed"]
    seeds = {s: cells[f"synth.two_tower.attention.s{s}"]["training"]["history"] for s in (0, 1)}
    assert seeds[0] != seeds[1]  # the seeds train different models

    _invoke("report", str(out))
    report = (out / "report" / "report.md").read_text()
    assert "## synth: test split, mean ± 95% CI over 2 seed(s)" in report
    assert re.search(r"\| two_tower \| mean \| ivf \| nprobe=16 \|.*\| 2 \| \d\.\d{4} ± \d\.\d{4} \|", report)
    assert "### mean pooling vs self-attention: A = two_tower (mean), B = two_tower (attention)" in report
    assert "### IVF vs exact search: A = two_tower+ivf, B = two_tower" in report
    # A verdict by seeds and one by users for every metric of every pair: 1 pair x 2 metrics, and
    # 2 overrides x 3 nprobe x 1 metric.
    verdict = r"(?:not distinguishable {} \(p=[\d.e-]+\)|two_tower\S* better, p=[\d.e-]+)"
    lines = re.findall(rf"\| {verdict.format('at 2 seeds')} \| {verdict.format('over users')} \|", report)
    assert len(lines) == 2 + 6
    for png in ("frontier_qps_synth.png", "recall_candidates_synth.png", "training_synth.png"):
        assert (out / "report" / png).stat().st_size > 1000
        assert f"]({png})" in report
    page = (out / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page
    assert "recindex experiment run" in report and "commit:" in report

    # A rerun reads every cell back: nothing is trained (training would fail here) or evaluated.
    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr("recindex.experiments.cell.run_experiment", no_training)
    monkeypatch.setattr("recindex.experiments.cell.evaluate_index", no_training)
    again = _invoke("experiment", "run", str(spec), "--out", str(out), "--quiet", "--no-report")
    assert "4 cells: 0 trained, 0 evaluated, 4 read from the cache, 0 failed" in again.output
    rerun = {c["id"]: json.loads((out / "cells" / f"{c['id']}.json").read_text()) for c in record["cells"]}
    assert all(r["from_cache"] for r in rerun.values())
    assert [r["configurations"] for r in rerun.values()] == [r["configurations"] for r in cells.values()]


def test_an_interrupted_run_resumes_with_the_cells_it_finished(tmp_path, monkeypatch):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.replace("seeds = 2", "seeds = 1").split("[indexes.ivf]")[0])
    options = RunOptions(tmp_path / "run", progress=False)
    finished = []

    def interrupted_after_one(task):
        if finished:
            raise KeyboardInterrupt
        finished.append(run_cell(task))
        return finished[-1]

    monkeypatch.setattr(runner, "run_cell", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        runner.run(spec, options)
    monkeypatch.setattr(runner, "run_cell", run_cell)
    resumed = runner.run(spec, options)
    assert (resumed.cells, resumed.trained, resumed.from_cache) == (2, 1, 1)
    assert json.loads((tmp_path / "run" / "cells" / f"{finished[0]['cell']['id']}.json").read_text())[
        "from_cache"
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("[families.two_tower]", '[families.two_tower]\nkind = "towers"'),
            "[families.two_tower] kind: 'towers'",
        ),
        (("sweep.nprobe = [1, 2, 16]", "sweep.nprobe = []"), "[indexes.ivf] sweep"),
        (('override = "mean" }', 'override = "meen" }'), "a override: 'meen' is not an override"),
        (("seeds = 2", "seeds = 2\nseed = 1"), "[experiment]: unknown key(s) ['seed']"),
    ],
)
def test_mistakes_in_an_experiment_file_name_the_file_and_key(tmp_path, edit, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(TINY.replace(*edit))
    with pytest.raises(RecIndexError) as error:
        load_spec(spec)
    assert str(spec) in str(error.value) and message in str(error.value)


def test_tracking_without_mlflow_says_how_to_install_it(tmp_path):
    try:
        import mlflow  # noqa: F401
    except ImportError:
        spec = tmp_path / "tiny.toml"
        spec.write_text(TINY)
        result = CliRunner().invoke(app, ["experiment", "run", str(spec), "--tracking", "file:./mlruns"])
        assert isinstance(result.exception, RecIndexError)
        assert "pip install recindex[tracking]" in str(result.exception)
    else:
        pytest.skip("MLflow is installed: the missing-extra message cannot show")


def test_tracking_logs_the_run_and_its_report_to_mlflow(tmp_path):
    mlflow = pytest.importorskip(
        "mlflow", reason="MLflow is an optional extra: pip install recindex[tracking]"
    )
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.replace("seeds = 2", "seeds = 1").split("[indexes.ivf]")[0])
    store = f"file:{tmp_path / 'mlruns'}"
    _invoke("experiment", "run", str(spec), "--out", str(tmp_path / "run"), "--quiet", "--tracking", store)
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["tiny"], output_format="list")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["seeds"] == "1"
    assert "synth/two_tower/mean/exact/-/recall_at_10" in parent.data.metrics
    assert len(runs) == 1 + 2  # the run and one nested run per cell
    artifacts = {
        a.path for a in mlflow.artifacts.list_artifacts(run_id=parent.info.run_id, artifact_path="report")
    }
    assert {"report/report.md", "report/report.html"} <= artifacts
