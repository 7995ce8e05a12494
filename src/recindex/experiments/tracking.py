"""`--tracking URI`: the run's parameters, its metrics (mean over seeds per configuration, and each
cell's) and the report logged to MLflow (`pip install recindex[tracking]`; a local `file:` store needs no
server)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType

from recindex.errors import RecIndexError
from recindex.experiments.results import load_run
from recindex.experiments.stats import spread

INSTALL = "pip install recindex[tracking]"


def mlflow_module() -> ModuleType:
    """MLflow, or an error that says how to install it (checked before a run starts)."""
    try:
        import mlflow  # an optional dependency: the `tracking` extra
    except ImportError:
        raise RecIndexError(f"--tracking logs to MLflow, which is not installed: {INSTALL}") from None
    return mlflow


def _key(*parts: str) -> str:
    """MLflow allows letters, digits, '_', '-', '.', ' ', ':' and '/' in names."""
    return re.sub(r"[^\w.\- :/]", "_", "/".join(parts).replace("@", "_at_"))


def log_run(uri: str, run_dir: str | Path, report_dir: Path) -> str:
    """Log the run folder's results and report; returns the MLflow run id."""
    mlflow = mlflow_module()
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked: a local folder with no server is what `file:` means.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return _log(mlflow, uri, load_run(run_dir), Path(run_dir), report_dir)
    except mlflow.exceptions.MlflowException as error:
        raise RecIndexError(f"--tracking {uri}: MLflow refused the run: {error}") from None


def _log(mlflow: ModuleType, uri: str, run, run_dir: Path, report_dir: Path) -> str:
    record = run.record
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(record["experiment"])
    with mlflow.start_run(run_name=run_dir.name) as active:
        mlflow.log_params(
            {
                "seeds": record["seeds"],
                "jobs": record["jobs"],
                "threads_per_job": record["threads_per_job"],
                "commit": record["git"].get("commit") or "unknown",
                "command": record["command"][:500],
                "spec_file": record["spec_file"][:500],
            }
        )
        summary = {}
        for row in run.rows:
            for metric in record["metrics"]:
                values = spread(row.values(metric).values())
                if values.n:
                    key = _key(row.dataset, row.family, row.override, row.index, row.setting, metric)
                    summary[key] = values.mean
        mlflow.log_metrics(summary)
        for result in run.cells:
            cell = result["cell"]
            with mlflow.start_run(run_name=cell["id"], nested=True):
                mlflow.log_params(
                    {
                        "dataset": cell["dataset"],
                        "family": cell["family"],
                        "override": cell["override"],
                        "seed": cell["seed"],
                        "key": result["key"],
                    }
                )
                metrics = {}
                for configuration in result["configurations"]:
                    setting = " ".join(f"{k}={v}" for k, v in sorted(configuration["params"].items())) or "-"
                    for metric, value in configuration["test"].items():
                        metrics[_key(configuration["index"], setting, metric)] = float(value)
                metrics["training_seconds"] = float(result["training"]["seconds"])
                mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(run_dir / "run.json"))
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        return active.info.run_id
