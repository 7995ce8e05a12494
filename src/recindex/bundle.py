"""Versioned bundles: a directory holding everything needed to serve and reproduce a trained model.

Layout:
    manifest.json          bundle id, model class and shape, resolved config, dataset fingerprint,
                           embedding dim and metric, code version, sha256 of every other file
    weights.pt             model state dict (read back with torch.load(weights_only=True))
    item_embeddings.npy    (n_items, dim) float32, L2-normalised: what an index is built from
    metrics.json           validation and test metrics of the training run, training history
    data/                  the interactions (id maps, sequences, features) the model was trained on

A run on user shards (`data.shard_users`) writes `data/` one shard at a time, into the files a run in
memory writes for the same data, and marks its manifest (`dataset.memory_map`) so that reading the
bundle maps the sequences from disk instead of loading them (`storage.load_interactions`).

A bundle is written to a temporary sibling directory and renamed into place, so a failed run never
leaves a half-written bundle. Loading verifies every checksum before anything is deserialised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

import recindex
from recindex.artifacts import file_checksums, read_manifest_json, staged_directory, verify_checksums
from recindex.config import ExperimentConfig, from_dict
from recindex.data.interactions import Interactions
from recindex.data.storage import load_interactions, save_interactions, save_interactions_in_parts
from recindex.errors import BundleError

FORMAT_VERSION = 1
# An empty model of the manifest's class and shape, for the stored weights to be loaded into. The
# composition root (recindex.pipelines) passes the one its family table gives for the model class:
# this module knows no family.
ModelReader = Callable[[dict, ExperimentConfig, Path], torch.nn.Module]


class StreamedData(Protocol):
    """A dataset read one part of its users at a time (`data.user_shards.UserShards`)."""

    skeleton: Interactions  # the ids and features, no sequences
    has_time: bool

    @property
    def name(self) -> str: ...

    @property
    def n_users(self) -> int: ...

    @property
    def n_items(self) -> int: ...

    @property
    def n_interactions(self) -> int: ...

    def offsets(self) -> np.ndarray: ...

    def parts(self) -> Iterable[Interactions]:
        """Consecutive users' sequences, in user order."""
        ...

    def fingerprint(self) -> str: ...


@dataclass
class Bundle:
    path: Path
    manifest: dict
    model: torch.nn.Module  # a retrieval model: user_vectors, item_vectors, content_vectors
    data: Interactions
    item_embeddings: np.ndarray
    config: ExperimentConfig
    metrics: dict

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]


def code_version() -> dict[str, str | None]:
    """Package version, plus the git commit when running from a checkout."""
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        commit = run.stdout.strip() or None
    return {"package": recindex.__version__, "git_commit": commit}


def save_bundle(
    out: Path,
    model: torch.nn.Module,
    data: Interactions | StreamedData,
    config: ExperimentConfig,
    metrics: dict,
    *,
    overwrite: bool = False,
) -> Path:
    """`data`: the dataset whole, or read part by part (written part by part, read back mapped)."""
    out = Path(out)
    streamed = not isinstance(data, Interactions)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BundleError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    with staged_directory(out) as staging:
        # a GPU model's weights are read back onto the CPU (read_bundle's map_location); its catalogue is
        # encoded on its GPU
        torch.save(model.state_dict(), staging / "weights.pt")
        with torch.no_grad():
            embeddings = model.item_vectors().cpu().numpy().astype(np.float32)
        np.save(staging / "item_embeddings.npy", embeddings, allow_pickle=False)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        if streamed:
            save_interactions_in_parts(
                data.skeleton, data.offsets(), data.parts(), staging / "data", timed=data.has_time
            )
        else:
            save_interactions(data, staging / "data")
        files = file_checksums(staging)
        created = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        bundle_id = f"{data.name}-{model.config.encoder}-{created}-{files['weights.pt'][:8]}"
        manifest = {
            "format_version": FORMAT_VERSION,
            "bundle_id": bundle_id,
            "created": created,
            "model_class": f"{type(model).__module__}.{type(model).__name__}",
            "model_shape": dataclasses.asdict(model.shape),
            "config": config.to_dict(),
            "dataset": {
                "name": data.name,
                "fingerprint": data.fingerprint(),
                "n_users": data.n_users,
                "n_items": data.n_items,
                "n_interactions": data.n_interactions,
                **({"memory_map": True} if streamed else {}),
            },
            "embedding": {
                "dim": getattr(model, "output_dim", model.config.dim),
                "metric": "ip",
                "normalized": True,
                "temperature": model.temperature,
            },
            "code_version": code_version(),
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out


def read_manifest(path: Path) -> dict:
    manifest_path = Path(path) / "manifest.json"
    required = (
        "format_version",
        "bundle_id",
        "model_class",
        "model_shape",
        "config",
        "dataset",
        "embedding",
        "files",
    )
    manifest = read_manifest_json(Path(path), "a bundle", required)
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format version {manifest['format_version']} is not supported "
            f"(this recindex reads version {FORMAT_VERSION})"
        )
    return manifest


def verify_files(path: Path, manifest: dict) -> None:
    verify_checksums(path, manifest["files"])


def read_bundle(path: str | Path, read_model: ModelReader) -> Bundle:
    """A bundle's files, checked against its manifest; `read_model` builds the empty model."""
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    config = from_dict(manifest["config"], f"{path}/manifest.json")
    data = load_interactions(path / "data", memory_map=bool(manifest["dataset"].get("memory_map")))
    if data.fingerprint() != manifest["dataset"]["fingerprint"]:
        raise BundleError(f"{path}: stored interactions do not match the manifest's dataset fingerprint")
    model = read_model(manifest, config, path)
    try:
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as error:
        raise BundleError(
            f"{path}: weights do not fit the model described in the manifest ({error})"
        ) from None
    model.eval()
    embeddings = np.load(path / "item_embeddings.npy", allow_pickle=False)
    expected = (manifest["dataset"]["n_items"], manifest["embedding"]["dim"])
    if embeddings.shape != expected:
        raise BundleError(f"{path}: item_embeddings.npy has shape {embeddings.shape}, expected {expected}")
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    return Bundle(path, manifest, model, data, embeddings, config, metrics)
