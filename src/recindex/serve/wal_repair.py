"""Repair a damaged write-ahead log (`recindex wal repair STATE_DIR`): keep every record before the
damage, move the rest of the file aside, and say what was cut.

A log the service refuses to open (see `WalCorrupt`) has a point after which its records cannot be put
in one order: two services wrote it at once (two records numbered 2), or bytes were damaged with
intact records after them. Every record before that point was acknowledged and applied in log order,
so they are kept. What follows is copied, byte for byte, to `<log>.cut-<time>` beside the log (never
deleted), and the intact records found in it are listed: their writes were acknowledged to a client,
and are lost from the service unless sent again (upserts and deletes by id can simply be repeated).

Records at or below the sequence number the current snapshot covers are already in that snapshot, so
cutting them loses nothing. When the kept part ends below that number, the repaired log is a single
checkpoint record at it, so that numbering goes on after the snapshot (see `truncate_through`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from recindex.errors import RecIndexError
from recindex.serve.state import ServiceState
from recindex.serve.state_lock import StateLock
from recindex.serve.wal import MAGIC, WalCorrupt, WriteAheadLog, frame, fsync_directory, read_frame

MAX_IDS_SHOWN = 5


@dataclass
class CutRecord:
    seq: int
    op: str
    item_ids: list[str]
    covered: bool  # at or below the snapshot's sequence number: the snapshot holds its effect


@dataclass
class RepairReport:
    log: Path
    problem: str | None  # None: the log opens as it is
    kept: int = 0  # records kept
    last_kept_seq: int = 0
    cut_at: int = 0  # byte offset where the cut part starts
    cut_bytes: int = 0
    cut_records: list[CutRecord] = field(default_factory=list)  # intact records in the cut part
    snapshot_seq: int = 0
    moved_to: Path | None = None  # None for a dry run or an intact log

    @property
    def lost(self) -> list[CutRecord]:
        """Cut records not held by the snapshot: acknowledged writes that must be sent again."""
        return [r for r in self.cut_records if not r.covered and r.op != "checkpoint"]


def repair_log(state_dir: str | Path, *, dry_run: bool = False) -> RepairReport:
    """Repair the current log of a state folder (holding its writer lock, so no service may run on it)."""
    state = ServiceState(state_dir)
    if not state.folder.is_dir():
        raise RecIndexError(f"{state.folder} does not exist (expected a service state folder)")
    with StateLock(state.folder, purpose="recindex wal repair"):
        record = state.read()
        path = state.log_path(record)
        if not path.is_file():
            raise RecIndexError(f"{path} does not exist: this state folder has no log to repair")
        snapshot_seq = int((record or {}).get("snapshot_seq") or 0) if (record or {}).get("snapshot") else 0
        report = _inspect(path, snapshot_seq)
        if report.problem is None or dry_run:
            return report
        data = path.read_bytes()
        report.moved_to = _write_aside(path, data[report.cut_at :])
        kept = data[: report.cut_at]
        if report.last_kept_seq < snapshot_seq:
            # everything kept is in the snapshot; a checkpoint at its seq keeps the numbering after it
            kept = frame({"seq": snapshot_seq, "op": "checkpoint", "bundle_id": record.get("bundle_id")})
        _replace_bytes(path, kept)
        return report


def _inspect(path: Path, snapshot_seq: int) -> RepairReport:
    report = RepairReport(log=path, problem=None, snapshot_seq=snapshot_seq)
    log = WriteAheadLog(path)
    try:
        for record in log.records():
            report.kept += 1
            report.last_kept_seq = record["seq"]
    except WalCorrupt as damage:
        data = path.read_bytes()
        report.problem = damage.problem
        report.cut_at = damage.offset
        report.cut_bytes = len(data) - damage.offset
        for r in _intact_records(data, damage.offset):
            item_ids = [str(i) for i in r.get("item_ids") or []]
            covered = r["seq"] <= snapshot_seq
            report.cut_records.append(CutRecord(r["seq"], str(r.get("op")), item_ids, covered))
    return report


def _intact_records(data: bytes, start: int) -> list[dict]:
    """Every intact frame's record from `start` on (damaged bytes between them are skipped)."""
    records, position = [], data.find(MAGIC, start)
    while position != -1:
        frame = read_frame(data, position)
        if frame is None:
            position = data.find(MAGIC, position + 1)
            continue
        record, end = frame
        records.append(record)
        position = data.find(MAGIC, end)
    return records


def _write_aside(path: Path, cut: bytes) -> Path:
    """The cut bytes, durable in a new file beside the log, before the log itself is changed."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.cut-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.cut-{stamp}-{number}")
    with open(target, "xb") as handle:
        handle.write(cut)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(path.parent)
    return target


def _replace_bytes(path: Path, kept: bytes) -> None:
    """Replace the log by its first bytes atomically (a crash leaves the old log or the new one)."""
    staging = path.with_suffix(path.suffix + ".repairing")
    with open(staging, "wb") as handle:
        handle.write(kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    fsync_directory(path.parent)


def describe(report: RepairReport) -> list[str]:
    """The report as lines for people."""
    if report.problem is None:
        return [
            f"{report.log}: intact ({report.kept} records, last seq {report.last_kept_seq}); nothing to cut"
        ]
    lines = [
        f"{report.log}: {report.problem}",
        f"kept: {report.kept} records before the damage (last seq {report.last_kept_seq})"
        + (f"; the snapshot covers seq {report.snapshot_seq}" if report.snapshot_seq else ""),
        f"cut: {report.cut_bytes:,} bytes from byte {report.cut_at}, holding "
        f"{len(report.cut_records)} intact record(s)",
    ]
    for r in report.cut_records:
        ids = ", ".join(r.item_ids[:MAX_IDS_SHOWN]) + (" ..." if len(r.item_ids) > MAX_IDS_SHOWN else "")
        note = " (in the snapshot: nothing lost)" if r.covered else ""
        lines.append(f"  seq {r.seq} {r.op} {len(r.item_ids)} item(s){': ' + ids if ids else ''}{note}")
    if report.moved_to is not None:
        lines.append(f"the cut part is in {report.moved_to} (nothing was deleted)")
    else:
        lines.append("dry run: nothing was changed")
    if report.lost:
        lines.append(
            f"{len(report.lost)} cut record(s) were acknowledged writes that the service will not have: "
            f"send those writes again if they should stay"
        )
    return lines
