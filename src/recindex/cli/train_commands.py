"""`recindex train` and `recindex evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from recindex.cli.app import DATA_DIR, app, console, errors
from recindex.cli.parsing import parse_assignments, parse_duration
from recindex.cli.present import history_words, index_cost_table, training_line
from recindex.config import load_config
from recindex.errors import RecIndexError
from recindex.eval.index_eval import evaluate_index
from recindex.eval.report import metrics_table
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import evaluate_bundle, run_experiment
from recindex.pipelines.indexes import check_index, load_bundle_index


@app.command()
def train(
    config: Path | None = typer.Option(
        None, "--config", help="TOML recipe, e.g. configs/beauty_two_tower.toml."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: section.key=value."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
    dataset: str | None = typer.Option(None, "--dataset", help="Name or path; overrides data.dataset."),
    data_dir: Path | None = DATA_DIR,
    seed: int | None = typer.Option(None, "--seed", help="Makes the run repeatable; overrides train.seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    max_time: str | None = typer.Option(
        None,
        "--max-time",
        help="Stop training after this long (e.g. 90s, 30m, 2h; a bare number is seconds) and keep the "
        "best epoch so far; overrides train.max_seconds.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run whose checkpoint is in --out (written with train.checkpoint_every), with "
        "the settings it started with.",
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda or cuda:N; overrides train.device."
    ),
) -> None:
    """Train a model, evaluate it and write a versioned bundle.

    Under torchrun (torchrun --nproc_per_node N -m recindex train ...) every process trains its share of
    each batch with DistributedDataParallel and rank 0 writes the bundle; see docs/training.md."""
    extra = list(overrides)
    if dataset is not None:
        extra.append(f"data.dataset={json.dumps(dataset)}")
    if data_dir is not None:
        extra.append(f"data.data_dir={json.dumps(str(data_dir))}")
    if seed is not None:
        extra.append(f"train.seed={seed}")
    if max_time is not None:
        extra.append(f"train.max_seconds={parse_duration(max_time, '--max-time')}")
    if device is not None:
        extra.append(f"train.device={json.dumps(device)}")
    settings = load_config(config, extra, check_index)  # [index] typed by the backends' specs
    result = run_experiment(
        settings,
        out,
        progress=not quiet,
        log=None if quiet else errors.print,
        overwrite=overwrite,
        resume=resume,
    )
    if not result.main:
        return  # under torchrun, rank 0 reports
    rows = {"valid": result.valid, "test": result.test}
    masked = history_words(settings.eval.exclude_seen)
    title = f"{result.data.name}, {settings.data.split}, full ranking, {masked}"
    console.print(metrics_table(rows, title))
    console.print(training_line(result.training, result.bundle_path))


@app.command()
def evaluate(
    bundle: Path = typer.Argument(..., help="A bundle directory written by 'recindex train'."),
    split: str = typer.Option("test", "--split", help="valid or test."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    exclude_seen: bool = typer.Option(
        True,
        "--exclude-seen/--include-seen",
        help="Mask the user's history from the ranking (the protocol default).",
    ),
    index: str | None = typer.Option(
        None, "--index", help="Retrieve through this index of the bundle (see 'recindex index list')."
    ),
    params: list[str] = typer.Option([], "--param", help="Index search parameter, e.g. ef=256, nprobe=64."),
) -> None:
    """Evaluate a bundle on its own data and split, and compare with the training run."""
    if split not in ("valid", "test"):
        raise RecIndexError(f"--split must be 'valid' or 'test', got {split!r}")
    loaded = load_bundle(bundle)
    if index is not None:
        _evaluate_through_index(
            loaded, index, split, exclude_seen, parse_assignments(params, "--param"), json_out
        )
        return
    metrics = evaluate_bundle(loaded, split, exclude_seen, progress=True)
    rows = {f"{split} (now)": metrics}
    stored = loaded.metrics.get(split)
    same_setting = loaded.metrics.get("exclude_seen", True) == exclude_seen
    if stored and same_setting:
        rows[f"{split} (training run)"] = stored
    console.print(metrics_table(rows, f"{loaded.bundle_id}: {split}, {history_words(exclude_seen)}"))
    if stored and same_setting:
        same = all(metrics.get(k) == v for k, v in stored.items())
        console.print(
            "[green]identical to the training run[/]" if same else "[yellow]differs from the training run[/]"
        )
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "bundle_id": loaded.bundle_id,
                    "split": split,
                    "exclude_seen": exclude_seen,
                    "metrics": metrics,
                },
                indent=2,
            )
        )


def _evaluate_through_index(
    loaded, name: str, split: str, exclude_seen: bool, params: dict, json_out
) -> None:
    index = load_bundle_index(loaded, name)
    result = evaluate_index(
        loaded, index, split, exclude_seen=exclude_seen, params=params or None, progress=True
    )
    console.print(
        metrics_table(
            {f"index {name}": result.index, "exact": result.exact},
            f"{loaded.bundle_id}: {split}, {history_words(exclude_seen)}",
        )
    )
    console.print(index_cost_table(name, index.backend, index.search_params | params, result))
    if json_out is not None:
        payload = {
            "bundle_id": loaded.bundle_id,
            "split": split,
            "exclude_seen": exclude_seen,
            "index": name,
            "search_params": {**index.search_params, **params},
            "metrics": result.index,
            "exact": result.exact,
            "cost": result.cost,
        }
        json_out.write_text(json.dumps(payload, indent=2))
