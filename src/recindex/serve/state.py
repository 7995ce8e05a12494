"""The service's durable state on disk, and the one file that says which parts of it are current.

    state_dir/
      active.json            what to serve: {"bundle_id", "bundle", "index", "log", "snapshot"}
      items.wal, items-*.wal write-ahead logs of item changes (one is current)
      snapshots/<name>/      an index with the log folded in (see serve.snapshots)

Every change of state (a compaction, a promotion) first writes its new files under fresh names, then
replaces `active.json` atomically, and only then deletes what the old record named. `active.json` is
the commit point: a crash at any moment leaves it naming a complete, consistent set of files (a
bundle, a snapshot or none, and the log to replay on top), and at worst some unnamed leftovers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from recindex.errors import RecIndexError
from recindex.serve.wal import fsync_directory

ACTIVE_FILE = "active.json"
DEFAULT_LOG = "items.wal"


class ServiceState:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def read(self) -> dict | None:
        """The current record, or None before the first promotion or compaction."""
        path = self.folder / ACTIVE_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise RecIndexError(f"{path}: cannot read the service state ({error})") from None
        if not isinstance(record, dict) or "bundle" not in record:
            raise RecIndexError(f"{path}: not a service state record (no 'bundle')")
        return record

    def write(self, record: dict) -> None:
        """Replace the record atomically and durably."""
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.folder / f"{ACTIVE_FILE}.tmp"
        with open(staging, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.folder / ACTIVE_FILE)
        fsync_directory(self.folder)

    def log_path(self, record: dict | None) -> Path:
        return self.folder / ((record or {}).get("log") or DEFAULT_LOG)

    def snapshot_path(self, record: dict | None) -> Path | None:
        name = (record or {}).get("snapshot")
        return self.folder / "snapshots" / name if name else None

    def new_log_name(self) -> str:
        """A log name not used before (a promotion starts a new log beside the current one)."""
        return f"items-{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns() % 10**9:09d}.wal"

    def discard(self, record: dict | None, keep: dict) -> None:
        """Delete the log and snapshot `record` named that `keep` (the current record) does not."""
        if not record:
            return
        old_log, old_snapshot = self.log_path(record), self.snapshot_path(record)
        if old_log != self.log_path(keep):
            old_log.unlink(missing_ok=True)
        if old_snapshot is not None and old_snapshot != self.snapshot_path(keep):
            shutil.rmtree(old_snapshot, ignore_errors=True)
