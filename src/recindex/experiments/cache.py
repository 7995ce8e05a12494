"""Where a cell's bundle and results are kept, under keys that change when anything that makes them does.

A bundle's key hashes its resolved config, the fingerprint of its data and the code version (every
source file of the package); the settings that do not change what is learned (threads, where the data
lies) are left out, and a bundle it starts from enters by that bundle's key, not its path. An
evaluation's key adds the index sweeps and the metrics' cut-offs. So an unchanged rerun only re-reads,
and a run stopped half way resumes with the cells it had finished.

    CACHE/KEY/bundle/                 the bundle (written atomically by `save_bundle`)
    CACHE/KEY/eval-EVALKEY.json       the cell's results (written atomically here)
    CACHE/KEY/eval-EVALKEY.npz        per-case ranks of each test configuration
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import recindex
from recindex.config import ExperimentConfig

PACKAGE = Path(recindex.__file__).resolve().parent


# Sources that cannot change a cell's numbers (the edges, and the experiment modules that schedule,
# read back, test and draw): left out of the code version, so that editing a report or the command line
# does not throw away every trained bundle.
NOT_IN_RESULTS = (
    "cli/",
    "serve/",
    "experiments/machine.py",
    "experiments/plots.py",
    "experiments/render.py",
    "experiments/report.py",
    "experiments/results.py",
    "experiments/runner.py",
    "experiments/stats.py",
    "experiments/tracking.py",
)


@cache
def code_version() -> str:
    """sha256 over the package's Python sources (paths and contents) that make a cell's results, so
    uncommitted edits count too."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix().startswith(NOT_IN_RESULTS):
            continue
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def bundle_key(
    config: ExperimentConfig, fingerprint: str, init_setting: str | None, init_key: str | None
) -> str:
    resolved = config.to_dict()
    resolved["train"].pop("threads")
    resolved["data"].pop("data_dir")
    if init_setting is not None:
        section, key = init_setting.split(".")
        resolved[section][key] = f"bundle:{init_key}"
    return _digest({"config": resolved, "data": fingerprint, "code": code_version()})


def evaluation_key(bundle: str, indexes: tuple, ks: tuple[int, ...]) -> str:
    return _digest({"bundle": bundle, "indexes": [dataclasses.asdict(i) for i in indexes], "ks": ks})


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary sibling, then rename: a reader finds the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=1, default=float)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez_compressed(out, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclasses.dataclass(frozen=True)
class CellFiles:
    root: Path  # CACHE/KEY
    evaluation: str

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def results(self) -> Path:
        return self.root / f"eval-{self.evaluation}.json"

    @property
    def ranks(self) -> Path:
        return self.root / f"eval-{self.evaluation}.npz"

    def has_bundle(self) -> bool:
        return (self.bundle / "manifest.json").is_file()

    def has_results(self) -> bool:
        return self.results.is_file() and self.ranks.is_file()
