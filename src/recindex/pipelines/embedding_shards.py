"""A folder of item-embedding shards (`recindex embed`), written shard by shard and read memory-mapped.

Layout:
    plan.json                   what is being exported: bundle id, dim, metric, dtype, the item table
                                (its files and row counts), rows per shard
    shard-00000.npy             (rows, dim) float32 or float16 vectors of rows 0..shard_rows-1
    shard-00000.ids.npy         (rows,) the items' ids as the table gives them (int64, or text)
    shard-00000.items.npy       (rows,) int64: the bundle's index of each item, -1 for a cold item
    shard-00000.json            the shard's row range, counts and the sha256 of its three files
    manifest.json               written once every shard is there: the plan, the count, every shard

A shard's files are written under `.partial` names (the vectors through a memory map, so a shard never
sits whole in memory) and renamed into place; its `.json` is written last, atomically, so a shard with
a `.json` is complete and anything else is debris of an interrupted run. A resumed run checks the
finished shards against their checksums, keeps them and starts at the first missing one. Shards are
independent, so processes can write disjoint sets of them into one folder (`--shard-of R/N`); the one
that finds them all there writes the manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recindex.errors import BundleError, RecIndexError
from recindex.hashing import sha256_file

FORMAT = "recindex-embeddings/1"
DTYPES = ("float32", "float16")
PLAN_KEYS = ("bundle_id", "dim", "metric", "normalized", "dtype", "n_rows", "shard_rows", "items")


@dataclass(frozen=True)
class ShardPlan:
    bundle_id: str
    dim: int
    metric: str
    normalized: bool
    dtype: str
    n_rows: int
    shard_rows: int
    items: dict  # {"path": the table as given, "files": [[file name, rows], ...]}

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise RecIndexError(f"embedding dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.shard_rows, int) or self.shard_rows < 1:
            raise RecIndexError(f"rows per shard must be a whole number >= 1, got {self.shard_rows!r}")

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    def rows_of(self, shard: int) -> tuple[int, int]:
        return shard * self.shard_rows, min((shard + 1) * self.shard_rows, self.n_rows)


def shard_stem(shard: int) -> str:
    return f"shard-{shard:05d}"


def write_json(path: Path, value: dict) -> None:
    """Write JSON atomically: a reader finds the old file or the new one, never half of one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(partial, path)


class ShardFolder:
    """The folder an export writes into, for one plan."""

    def __init__(self, folder: Path, plan: ShardPlan):
        self.folder, self.plan = folder, plan

    @staticmethod
    def start(folder: Path, plan: ShardPlan, *, resume: bool, shared: bool = False) -> ShardFolder:
        """A new export in an empty (or new) folder, or the same export continued (`resume`) or written
        by several processes at once (`shared`: each finds the plan another wrote, and checks it)."""
        folder = Path(folder)
        plan_path = folder / "plan.json"
        if not plan_path.is_file():
            # Another process of a shared export may write the plan meanwhile: look again before refusing.
            found = folder.iterdir() if folder.exists() else ()
            others = [p for p in found if not p.name.startswith("plan.json")]
            if others and not plan_path.is_file():
                raise RecIndexError(f"{folder} exists and is not an export; choose an empty or new --out")
            if not plan_path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                write_json(plan_path, {"format": FORMAT, **asdict(plan)})
                return ShardFolder(folder, plan)
        if not (resume or shared):
            raise RecIndexError(
                f"{folder} already holds an export; pass --resume to continue it, or choose another --out"
            )
        stored = json.loads(plan_path.read_text(encoding="utf-8"))
        differ = [key for key in PLAN_KEYS if stored.get(key) != asdict(plan)[key]]
        if differ:
            raise RecIndexError(
                f"{folder}: --resume continues the same export, but its {', '.join(differ)} differ "
                f"(stored: {', '.join(f'{k}={stored.get(k)!r}'[:120] for k in differ)}); "
                "choose another --out for a new export"
            )
        return ShardFolder(folder, plan)

    def finished(self, shard: int) -> bool:
        """Whether the shard is complete and intact; a damaged one is removed, to be written again."""
        record_path = self.folder / f"{shard_stem(shard)}.json"
        if not record_path.is_file():
            return False
        try:
            files = json.loads(record_path.read_text(encoding="utf-8"))["files"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            files = None  # an unreadable record: as good as none
        intact = files is not None and all(
            (self.folder / name).is_file() and sha256_file(self.folder / name) == digest
            for name, digest in files.items()
        )
        if not intact:
            record_path.unlink()
        return intact

    def write(self, shard: int, batches: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
        """Write one shard from (vectors, ids, bundle item indices) batches that cover its rows."""
        lo, hi = self.plan.rows_of(shard)
        stem = self.folder / shard_stem(shard)
        partial = {kind: stem.with_name(f"{stem.name}{kind}.npy.partial") for kind in ("", ".ids", ".items")}
        vectors = np.lib.format.open_memmap(
            partial[""], mode="w+", dtype=self.plan.dtype, shape=(hi - lo, self.plan.dim)
        )
        items = np.empty(hi - lo, np.int64)
        ids: list[np.ndarray] = []
        row = 0
        for batch_vectors, batch_ids, batch_items in batches:
            vectors[row : row + len(batch_vectors)] = batch_vectors
            items[row : row + len(batch_vectors)] = batch_items
            ids.append(batch_ids)
            row += len(batch_vectors)
        if row != hi - lo:
            raise RecIndexError(f"shard {shard}: {row} rows read, expected {hi - lo}: the item table changed")
        vectors.flush()
        del vectors
        joined = np.concatenate(ids)
        with open(partial[".ids"], "wb") as handle:  # np.save would add .npy to the .partial name
            np.save(handle, joined.astype(str) if joined.dtype == object else joined, allow_pickle=False)
        with open(partial[".items"], "wb") as handle:
            np.save(handle, items, allow_pickle=False)
        files = {}
        for path in partial.values():
            final = path.with_name(path.name.removesuffix(".partial"))
            os.replace(path, final)
            files[final.name] = sha256_file(final)
        cold = int((items < 0).sum())
        record = {"shard": shard, "rows": [lo, hi], "count": hi - lo, "cold": cold, "files": files}
        write_json(stem.with_name(f"{stem.name}.json"), record)
        return record

    def clear_debris(self) -> None:
        """Remove files an interrupted run left half-written."""
        for path in self.folder.glob("*.partial"):
            path.unlink()

    def finish(self) -> Path | None:
        """Write the manifest when every shard is there (returns its path), else None."""
        records = []
        for shard in range(self.plan.n_shards):
            path = self.folder / f"{shard_stem(shard)}.json"
            if not path.is_file():
                return None
            records.append(json.loads(path.read_text(encoding="utf-8")))
        manifest = {
            "format": FORMAT,
            **asdict(self.plan),
            "count": self.plan.n_rows,
            "cold": sum(r["cold"] for r in records),
            "shards": [
                {
                    "vectors": f"{shard_stem(r['shard'])}.npy",
                    "ids": f"{shard_stem(r['shard'])}.ids.npy",
                    "items": f"{shard_stem(r['shard'])}.items.npy",
                    "rows": r["rows"],
                    "count": r["count"],
                    "sha256": r["files"],
                }
                for r in records
            ],
        }
        write_json(self.folder / "manifest.json", manifest)
        self.clear_debris()  # every shard is complete: what is half-written is left over
        return self.folder / "manifest.json"


@dataclass(frozen=True)
class Export:
    """A finished export, its files checked; vectors are read through memory maps."""

    folder: Path
    manifest: dict

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    def batches(self, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(bundle item indices, float32 vectors) in row order, `batch_rows` at a time, memory-mapped:
        only the batch being handed out is read into memory."""
        for shard in self.manifest["shards"]:
            vectors = np.load(self.folder / shard["vectors"], mmap_mode="r", allow_pickle=False)
            items = np.load(self.folder / shard["items"], mmap_mode="r", allow_pickle=False)
            for start in range(0, len(vectors), batch_rows):
                stop = start + batch_rows
                yield np.asarray(items[start:stop]), np.asarray(vectors[start:stop], np.float32)


def open_export(folder: Path) -> Export:
    """A finished export folder, every shard checked against the manifest's sha256."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        hint = (
            "its export is not finished: run the same 'recindex embed ... --resume' to complete it"
            if (folder / "plan.json").is_file()
            else "it is not a folder written by 'recindex embed'"
        )
        raise BundleError(f"{folder}: no manifest.json; {hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: not valid JSON ({error})") from None
    missing = [key for key in (*PLAN_KEYS, "format", "count", "shards") if key not in manifest]
    if missing or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not an embedding export manifest ({FORMAT}); missing {missing}")
    for shard in manifest["shards"]:
        for name, digest in shard["sha256"].items():
            file = folder / name
            if not file.is_file():
                raise BundleError(f"{folder}: {name}, listed in the manifest, is missing")
            if sha256_file(file) != digest:
                raise BundleError(f"{folder}: {name} is corrupt (its sha256 differs from the manifest's)")
    return Export(folder, manifest)
