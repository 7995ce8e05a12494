"""Snapshots: the serving index with the write-ahead log folded in, so a restart need not replay it all.

A snapshot of a serving version at log sequence `seq` holds everything the log's first `seq` records
did to the bundle: the index (saved by its backend), the popularity list, and the items added, changed
or deleted since the bundle (ids, content features, attributes and vectors; a promotion re-encodes
them with a new tower, so they are kept, not only their effect on the index). A restart loads the
bundle, then the snapshot, then replays the log records after `seq`.

Compaction (`compact`) writes a snapshot under a new name, makes it current through the state record
(see serve.state), and only then truncates the log through `seq`. Writes wait while it runs (it holds
the writers' lock, so the snapshot and `seq` agree); reads go on. With a log shared by several
processes (`serve --workers N`) it also holds the log's exclusive lock: no process appends, and none
loads the snapshot being replaced, until it is done; the first process to compact does it for all.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from recindex.artifacts import file_checksums, read_manifest_json, staged_directory, verify_checksums
from recindex.bundle import Bundle
from recindex.pipelines.indexes import load_index
from recindex.serve.items import ItemChange, ItemWriter, describe_change
from recindex.serve.recommender import ServingVersion
from recindex.serve.state import ServiceState

FORMAT_VERSION = 1


def write_snapshot(writer: ItemWriter, folder: Path) -> Path:
    """Save the writer's version as of its log's last record (call with `writer.lock` held)."""
    version = writer.version
    added = list(writer.added.values())
    internal = [version.item_lookup[c.item_id] for c in added]
    vectors = (
        np.stack([version.changed_vectors[i] for i in internal]).astype(np.float32)
        if added
        else np.zeros((0, version.index.dim), np.float32)
    )
    with staged_directory(folder) as staging:
        version.index.save(staging / "index")
        version.popular.save(staging / "popular")
        np.save(staging / "added_vectors.npy", vectors, allow_pickle=False)
        items = {
            "new_items": version.new_items,
            "deleted": sorted(writer.deleted),
            "added": [
                {
                    "item_id": c.item_id,
                    "features": c.features,
                    "by_vector": c.vector is not None,
                    "attributes": c.attributes,
                }
                for c in added
            ],
        }
        (staging / "items.json").write_text(json.dumps(items), encoding="utf-8")
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "recindex service snapshot",
            "bundle_id": version.bundle_id,
            "seq": writer.applied,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": file_checksums(staging),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def restore_snapshot(bundle: Bundle, folder: Path, source: dict) -> tuple[ServingVersion, ItemWriter, int]:
    """The serving version a snapshot describes, a writer (without a log) holding its changes, and the
    log sequence it covers."""
    manifest = read_manifest_json(folder, "a service snapshot", ("bundle_id", "seq", "files"))
    if manifest["bundle_id"] != bundle.bundle_id:
        raise SnapshotMismatch(
            f"{folder}: snapshot of bundle {manifest['bundle_id']!r}, not {bundle.bundle_id!r}"
        )
    verify_checksums(folder, manifest["files"])
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    vectors = np.load(folder / "added_vectors.npy", allow_pickle=False)
    version = ServingVersion.of(
        bundle, load_index(folder / "index"), source=source, popular=load_index(folder / "popular")
    )
    for raw in items["new_items"]:  # the same internal indices as before, in the same order
        version.internal_id(raw, create=True)
    writer = ItemWriter(version, None)
    for row, entry in enumerate(items["added"]):
        vector = vectors[row]
        change = ItemChange(
            entry["item_id"],
            entry["features"],
            vector.tolist() if entry["by_vector"] else None,
            entry["attributes"],
        )
        writer.added[change.item_id] = change
        internal = version.item_lookup[change.item_id]
        version.changed_vectors[internal] = vector.copy()
        version.changed_descriptions[internal] = describe_change(change)
    writer.deleted = set(items["deleted"])
    return version, writer, int(manifest["seq"])


class SnapshotMismatch(Exception):
    """A snapshot that belongs to another bundle than the one being served."""


def compact(writer: ItemWriter, state: ServiceState) -> dict:
    """Fold the log into a new snapshot and truncate it; returns what was done."""
    with writer.lock:
        if writer.log is None:
            return {"compacted": False, "reason": "no write-ahead log"}
        with writer.log.exclusive():
            writer.sync()  # what other processes appended: the snapshot holds every record through seq
            return _compact_held(writer, state)


def _compact_held(writer: ItemWriter, state: ServiceState) -> dict:
    record = state.read() or {
        "bundle_id": writer.version.bundle_id,
        **{"bundle": None, "index": None},
        **writer.version.source,
        "log": writer.log.name,
        "snapshot": None,
    }
    seq = writer.applied
    covered = (record.get("snapshot_seq") or 0) if record.get("snapshot") else 0
    if seq <= covered:
        return {"compacted": False, "reason": "nothing logged since the last snapshot", "seq": seq}
    started = time.perf_counter()
    name = f"{writer.version.bundle_id}-{seq:012d}"
    write_snapshot(writer, state.folder / "snapshots" / name)
    new_record = {**record, "snapshot": name, "snapshot_seq": seq, "log": writer.log.name}
    state.write(new_record)  # the commit point: from here a restart starts from the new snapshot
    remaining = writer.log.truncate_through(seq, bundle_id=writer.version.bundle_id)
    state.discard(record, keep=new_record)
    return {
        "compacted": True,
        "seq": seq,
        "snapshot": name,
        "items": len(writer.version.index),
        "log_records_left": remaining,
        "seconds": round(time.perf_counter() - started, 3),
    }


class Compactor:
    """Compacts in the background once `every_records` changes have been logged since the last time."""

    def __init__(
        self, writer: ItemWriter, state: ServiceState, every_records: int, poll_seconds: float = 1.0
    ):
        self.writer = writer
        self.state = state
        self.every_records = every_records
        self.poll_seconds = poll_seconds
        self.last: dict | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recindex-compactor", daemon=True)
        self._log = writer.log
        self._base = writer.applied

    def start(self) -> Compactor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def due(self) -> bool:
        log = self.writer.log
        if log is not self._log:  # a promotion started a new log: count from its start
            self._log, self._base = log, 0
        return log is not None and self.writer.applied - self._base >= self.every_records

    def run_once(self) -> dict:
        result = compact(self.writer, self.state)
        self.last = result
        self._log = self.writer.log
        self._base = self.writer.applied
        return result

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if not self.due():
                continue
            try:
                self.run_once()
                self.error = None
            except Exception as error:  # keep serving; the log still holds every change
                self.error = f"{type(error).__name__}: {error}"
