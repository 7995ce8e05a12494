"""`recindex experiment run FILE.toml` and `recindex report RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer

from recindex.cli.app import DATA_DIR, app, console, errors, experiment_app
from recindex.errors import RecIndexError
from recindex.experiments import RunOptions, load_spec, run, write_report
from recindex.experiments.plan import plan
from recindex.experiments.results_page import write_results_page
from recindex.experiments.tracking import log_run, mlflow_module

TRACKING = typer.Option(
    None,
    "--tracking",
    help="Also log to MLflow at this tracking URI (e.g. file:./mlruns); needs recindex\\[tracking].",
)


@experiment_app.command("run")
def experiment_run(
    file: Path = typer.Argument(..., help="An experiment file, e.g. experiments/ml100k.toml."),
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        help="Seeds per cell (train.seed = 0..N-1); default: the file's \\[experiment] seeds, else 3.",
    ),
    jobs: int = typer.Option(
        1, "--jobs", help="Cells run side by side, each in its own process with cores // jobs threads."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: runs/experiments/NAME)."),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Bundles and results by key (default: RUN_DIR/cache); "
        "share one between runs to reuse their cells.",
    ),
    data_dir: Path | None = DATA_DIR,
    tracking: str | None = TRACKING,
    report: bool = typer.Option(True, "--report/--no-report", help="Write RUN_DIR/report when the run ends."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check every cell's config and print the cells; train nothing."
    ),
) -> None:
    """Train and evaluate every cell of an experiment per seed, then write its report."""
    if dry_run:
        for line in plan(file, seeds, str(data_dir) if data_dir else None).lines():
            console.print(line, markup=False, highlight=False)
        return
    if tracking is not None:
        mlflow_module()  # refused now, not after hours of training
    spec = load_spec(file)
    out = out or Path("runs") / "experiments" / spec.name
    # The command as given, rebuilt from its options (the same under `python -m` or a test's runner).
    given = {
        "--seeds": seeds,
        "--jobs": jobs if jobs != 1 else None,
        "--out": out,
        "--cache": cache,
        "--data-dir": data_dir,
        "--tracking": tracking,
    }
    command = ["recindex", "experiment", "run", str(file)]
    command += [word for flag, value in given.items() if value is not None for word in (flag, str(value))]
    options = RunOptions(
        out,
        seeds,
        jobs,
        cache,
        str(data_dir) if data_dir else None,
        command,
        progress=not quiet,
        console=errors,
    )
    summary = run(file, options)
    console.print(
        f"{summary.cells} cells: {summary.trained} trained, {summary.evaluated} evaluated, "
        f"{summary.from_cache} read from the cache, {len(summary.failed)} failed; "
        f"wall time {summary.wall_seconds:.1f} s; run folder {out}"
    )
    if report:
        _report(out, None, tracking)
    if summary.failed:
        details = "; ".join(f"{cell}: {error}" for cell, error in summary.failed.items())
        raise RecIndexError(f"{len(summary.failed)} cell(s) failed (see {out}/cells/*.error.txt): {details}")


@experiment_app.command("results")
def experiment_results(
    run_dirs: list[Path] = typer.Argument(None, help="Finished run folders (none: list what is not run)."),
    out: Path = typer.Option(Path("docs/results.md"), "--out", help="The page to write."),
    experiments: Path = typer.Option(
        Path("experiments"), "--experiments", help="The checked-in experiment files, to list those not run."
    ),
) -> None:
    """One results page from finished run folders: each report's tables, verdicts and plots, where and
    how each was run, and the experiments not run yet with their commands."""
    run_dirs = list(run_dirs or [])
    command = " ".join(
        ["recindex", "experiment", "results", *map(str, run_dirs), "--out", str(out)]
        + (["--experiments", str(experiments)] if experiments != Path("experiments") else [])
    )
    console.print(f"results page: {write_results_page(run_dirs, out, experiments, command)}")


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by 'recindex experiment run'."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: RUN_DIR/report)."),
    tracking: str | None = TRACKING,
) -> None:
    """Markdown and HTML report of a run: mean ± 95% CI over seeds, comparisons with verdicts, plots."""
    if tracking is not None:
        mlflow_module()
    _report(run_dir, out, tracking)


def _report(run_dir: Path, out: Path | None, tracking: str | None) -> None:
    md_path, html_path = write_report(run_dir, out)
    console.print(f"report: {md_path} and {html_path}")
    if tracking is not None:
        console.print(f"MLflow run {log_run(tracking, run_dir, md_path.parent)} at {tracking}")
