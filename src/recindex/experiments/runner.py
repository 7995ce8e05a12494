"""Run an experiment: every cell of its matrix, in dependency order, side by side in `jobs` processes of
cores // jobs threads each, with a progress display (cells done, the running ones, an estimate of the
time left). Cells whose results are in the cache are read, not run.

    RUN_DIR/run.json             the experiment, the command, the machine, the cells, timings
    RUN_DIR/cells/ID.json        one cell's results (written atomically as each cell ends)
    RUN_DIR/cells/ID.npz         its per-case test ranks (for bootstraps over users)
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from threadpoolctl import threadpool_limits

from recindex.errors import RecIndexError
from recindex.experiments.cache import CellFiles, bundle_key, evaluation_key, write_json_atomic
from recindex.experiments.cell import CellTask, data_key, dataset_of, read_results, run_cell
from recindex.experiments.machine import run_info
from recindex.experiments.matrix import Cell, expand
from recindex.experiments.spec import ExperimentSpec, load_spec


@dataclass
class RunOptions:
    out: Path
    seeds: int | None = None
    jobs: int = 1
    cache: Path | None = None  # default: RUN_DIR/cache
    data_dir: str | None = None
    command: list[str] | None = None
    progress: bool = True
    console: Console | None = None


@dataclass
class RunSummary:
    out: Path
    cells: int
    trained: int = 0  # cells whose bundle was trained in this run
    evaluated: int = 0  # cells evaluated in this run (trained, or a cached bundle with new evaluations)
    from_cache: int = 0  # cells whose results were read back
    failed: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0


def limit_threads(threads: int) -> None:
    """Torch, FAISS and the BLAS pools of this process to `threads` (each job gets cores // jobs)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    threadpool_limits(limits=threads)


def run(path: str | Path, options: RunOptions) -> RunSummary:
    started = time.perf_counter()
    spec = load_spec(path)
    if options.jobs < 1:
        raise RecIndexError(f"--jobs must be at least 1, got {options.jobs}")
    threads = max(1, (os.cpu_count() or 1) // options.jobs)
    cells = expand(spec, options.seeds, data_dir=options.data_dir, threads=threads)
    cache = options.cache or options.out / "cache"
    files = _cell_files(cells, cache)
    info = run_info(options.command)
    summary = RunSummary(options.out, len(cells))
    record = _run_record(spec, cells, files, options, info, threads, cache)
    earlier = _earlier_invocations(options.out / "run.json")
    (options.out / "cells").mkdir(parents=True, exist_ok=True)
    write_json_atomic(options.out / "run.json", record)
    by_id = {cell.id: cell for cell in cells}
    done: dict[str, dict] = {}
    with _Display(len(cells), options) as display:
        for cell in cells:
            if files[cell.id].has_results():
                _keep(options.out, cell, files[cell.id], read_results(files[cell.id]), cached=True)
                summary.from_cache += 1
                done[cell.id] = {}
                display.finished(cell, None)
        pending = [cell for cell in cells if cell.id not in done]
        _schedule(pending, by_id, files, options, threads, summary, display, done)
    summary.wall_seconds = time.perf_counter() - started
    record.update(
        finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        wall_seconds=summary.wall_seconds,
        trained=summary.trained,
        evaluated=summary.evaluated,
        from_cache=summary.from_cache,
        failed=summary.failed,
    )
    # Each invocation on this run folder is kept (a first run, its resumptions, its cached reruns).
    this = {
        key: record[key]
        for key in ("command", "started", "finished", "wall_seconds", "trained", "evaluated", "from_cache")
    }
    record["invocations"] = [
        *earlier,
        {**this, "commit": record["git"].get("commit"), "failed": len(summary.failed)},
    ]
    write_json_atomic(options.out / "run.json", record)
    return summary


def _earlier_invocations(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("invocations", []))
    except (json.JSONDecodeError, OSError, AttributeError):
        return []  # a run.json this code cannot read: its history is not carried over


def _cell_files(cells: list[Cell], cache: Path) -> dict[str, CellFiles]:
    fingerprints: dict[tuple, str] = {}
    files: dict[str, CellFiles] = {}
    for cell in cells:  # dependencies come first, so their keys are known
        source = data_key(cell.config)
        if source not in fingerprints:
            fingerprints[source] = dataset_of(cell.config).fingerprint()
        parent = files[cell.depends_on].root.name if cell.depends_on else None
        key = bundle_key(cell.config, fingerprints[source], cell.init_setting, parent)
        files[cell.id] = CellFiles(cache / key, evaluation_key(key, cell.indexes, cell.config.eval.ks))
    return files


def _schedule(pending, by_id, files, options, threads, summary, display, done) -> None:
    """Run the pending cells, each once the cell it starts from has its bundle; a failed cell is
    recorded and the cells that start from it are skipped."""
    pool = None
    if options.jobs > 1:
        context = multiprocessing.get_context("spawn")  # no forked copies of torch's thread pools
        pool = ProcessPoolExecutor(
            options.jobs, mp_context=context, initializer=limit_threads, initargs=(threads,)
        )
    else:
        limit_threads(threads)
    running: dict[Future, tuple[Cell, bool]] = {}
    try:
        while pending or running:
            for cell in list(pending):
                parent = cell.depends_on
                if parent in summary.failed:
                    summary.failed[cell.id] = f"not run: {parent} failed"
                    pending.remove(cell)
                    display.finished(cell, None)
                    continue
                if (parent is not None and parent not in done) or len(running) >= max(1, options.jobs):
                    continue
                pending.remove(cell)
                task = CellTask(cell, files[cell.id], files[parent].bundle if parent else None)
                trains = not files[cell.id].has_bundle()
                display.started(cell)
                if pool is None:
                    _finish(cell, _call(run_cell, task), trains, options, files, summary, display, done)
                else:
                    running[pool.submit(_call, run_cell, task)] = (cell, trains)
            if running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell, trains = running.pop(future)
                    _finish(cell, future.result(), trains, options, files, summary, display, done)
            elif pending and all(c.depends_on not in done for c in pending):
                raise RecIndexError(f"cells wait on cells that never ran: {[c.id for c in pending]}")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _call(function: Callable, task: CellTask) -> tuple[dict | None, str | None]:
    """(results, None) or (None, the error) so that one cell's failure does not end the run."""
    try:
        return function(task), None
    except Exception as error:  # noqa: BLE001  (recorded with its traceback, the run goes on)
        return None, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"


def _finish(cell, outcome, trains, options, files, summary, display, done) -> None:
    result, error = outcome
    if error is not None:
        summary.failed[cell.id] = error.splitlines()[0]
        (options.out / "cells" / f"{cell.id}.error.txt").write_text(error, encoding="utf-8")
        display.finished(cell, None)
        return
    summary.trained += int(trains)
    summary.evaluated += 1
    _keep(options.out, cell, files[cell.id], result, cached=False)
    done[cell.id] = result
    display.finished(cell, result["seconds"]["cell"])


def _keep(out: Path, cell: Cell, files: CellFiles, result: dict, cached: bool) -> None:
    shutil.copyfile(files.ranks, out / "cells" / f"{cell.id}.npz")
    write_json_atomic(out / "cells" / f"{cell.id}.json", {**result, "from_cache": cached})


def _run_record(spec: ExperimentSpec, cells, files, options, info, threads, cache) -> dict[str, Any]:
    return {
        "experiment": spec.name,
        "description": spec.description,
        "spec_file": str(spec.path),
        "spec_text": spec.path.read_text(encoding="utf-8"),
        **info,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seeds": options.seeds if options.seeds is not None else spec.seeds,
        "jobs": options.jobs,
        "threads_per_job": threads,
        "cache": str(cache),
        "metrics": list(spec.metrics),
        "datasets": spec.datasets,
        "indexes": {name: dataclasses.asdict(sweep) for name, sweep in spec.indexes.items()},
        "comparisons": [dataclasses.asdict(comparison) for comparison in spec.comparisons],
        "cells": [{"id": cell.id, "key": files[cell.id].root.name} for cell in cells],
    }


class _Display:
    """Cells done of all, the running ones, and the time left estimated from the cells run so far."""

    def __init__(self, total: int, options: RunOptions):
        self.total, self.jobs = total, options.jobs
        self.running: list[str] = []
        self.durations: list[float] = []
        self.left = total
        self.progress = Progress(
            TextColumn("[bold]cells"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[running]}"),
            console=options.console or Console(stderr=True),
            disable=not options.progress,
        )

    def __enter__(self) -> _Display:
        self.progress.__enter__()
        self.task = self.progress.add_task("cells", total=self.total, eta="", running="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def started(self, cell: Cell) -> None:
        self.running.append(cell.label)
        self._refresh()

    def finished(self, cell: Cell, seconds: float | None) -> None:
        if cell.label in self.running:
            self.running.remove(cell.label)
        if seconds is not None:
            self.durations.append(seconds)
        self.left -= 1
        self.progress.advance(self.task)
        self._refresh()

    def _refresh(self) -> None:
        eta = ""
        if self.durations and self.left:
            seconds = sum(self.durations) / len(self.durations) * self.left / self.jobs
            eta = f"ETA {time.strftime('%H:%M:%S', time.gmtime(seconds))}"
        running = "running: " + ", ".join(self.running) if self.running else ""
        self.progress.update(self.task, eta=eta, running=running)
