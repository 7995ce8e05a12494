"""A write-ahead log of item changes: appended and fsynced before a write is acknowledged.

The service keeps its index in memory; this log is what makes an acknowledged upsert or delete survive
a crash. On start the service loads its snapshot (a bundle plus its index) and replays the records
after the snapshot's sequence number; compaction folds the log into a new snapshot and drops the
records it covers.

Format: a sequence of frames `MAGIC (4 B) | length (u32 LE) | crc32 of payload (u32 LE) | payload`,
the payload a UTF-8 JSON object with at least `seq` (1, 2, 3, ... in order) and `op`. A crash can leave
only the last frame torn (partly written): opening the log finds it, and cuts it off, since it was
never acknowledged. A damaged frame followed by intact ones is not a torn tail but corruption, and is
refused rather than skipped, because skipping it would silently lose acknowledged writes.

Why by hand: the framing is twenty lines, and a database (SQLite, LMDB) would bring its own durability
settings to get right for no gain; vectors travel as base64 of float32 bytes to keep frames small.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recindex.errors import RecIndexError

MAGIC = b"RIW1"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
MAX_RECORD_BYTES = 64 << 20


class WalCorrupt(RecIndexError):
    """The log is damaged somewhere other than a torn last frame: from byte `offset` on it cannot be
    trusted. The message says how to recover (`recindex wal repair`, see serve.wal_repair)."""

    def __init__(self, path: Path, offset: int, problem: str):
        self.path, self.offset, self.problem = Path(path), offset, problem
        super().__init__(
            f"{path}: {problem}; the log is damaged, e.g. by two services writing one "
            f"state folder. To keep every record before the damage and move the rest aside, stop the "
            f"services on this folder and run: recindex wal repair {self.path.parent} "
            f"(--dry-run first shows what it would cut; docs/service.md, 'A damaged log')"
        )


def encode_vectors(vectors: np.ndarray) -> dict:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_vectors(blob: dict) -> np.ndarray:
    raw = base64.b64decode(blob["b64"])
    return np.frombuffer(raw, dtype=np.float32).reshape(blob["shape"]).copy()


class WriteAheadLog:
    """Append-only, fsynced, crash-safe record log (one writer per process; appends are serialised)."""

    def __init__(self, path: str | Path, *, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file = None
        self.last_seq = 0

    def open(self) -> WriteAheadLog:
        """Check the log, cut off a torn last frame, and get ready to append after it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        good_end = 0
        for _, end in self._scan():
            good_end = end
        with open(self.path, "ab") as handle:
            if handle.tell() != good_end:
                handle.truncate(good_end)  # the torn tail was never acknowledged
                os.fsync(handle.fileno())
        self._file = open(self.path, "ab")  # noqa: SIM115 (held open for appends)
        fsync_directory(self.path.parent)
        return self

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> WriteAheadLog:
        return self if self._file is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def append(self, op: str, **fields) -> int:
        """Write one record and make it durable; returns its sequence number."""
        if self._file is None:
            raise RecIndexError("the write-ahead log is not open")
        with self._lock:
            seq = self.last_seq + 1
            encoded = frame({"seq": seq, "op": op, **fields})
            size = len(encoded) - HEADER.size
            if size > MAX_RECORD_BYTES:
                raise RecIndexError(f"a log record of {size:,} bytes is over the {MAX_RECORD_BYTES:,} limit")
            self._file.write(encoded)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self.last_seq = seq
            return seq

    def records(self, after: int = 0) -> Iterator[dict]:
        """The records with seq > `after`, in order."""
        for record, _ in self._scan():
            if record["seq"] > after:
                yield record

    def _scan(self) -> Iterator[tuple[dict, int]]:
        """(record, offset after it) for every intact frame; stops quietly at a torn last frame."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        offset, expected = 0, None
        while offset < len(data):
            frame = read_frame(data, offset)
            if frame is None:
                if _intact_frame_after(data, offset + 1):
                    raise WalCorrupt(
                        self.path, offset, f"damaged record at byte {offset} followed by intact ones"
                    )
                return  # a torn tail
            record, end = frame
            if expected is not None and record["seq"] != expected:
                problem = f"record {record['seq']} where {expected} was expected, at byte {offset}"
                raise WalCorrupt(self.path, offset, problem)
            expected = record["seq"] + 1
            self.last_seq = record["seq"]
            offset = end
            yield record, offset

    def truncate_through(self, seq: int, **fields) -> int:
        """Drop the records with seq <= `seq` (covered by a snapshot); returns how many remain.

        A `checkpoint` record numbered `seq` (with `fields`) takes their place, so the numbering goes
        on from where it was after a restart too, and a snapshot's `seq` still means the same records.
        """
        with self._lock:
            keep = [record for record in self.records() if record["seq"] > seq]
            self._replace([{"seq": seq, "op": "checkpoint", **fields}, *keep])
            self.last_seq = max(self.last_seq, seq)
            return len(keep)

    def rewrite(self, records: list[dict]) -> None:
        """Replace the whole log by `records` (numbered from 1), e.g. the changes carried to a new bundle."""
        with self._lock:
            numbered = [{**record, "seq": seq} for seq, record in enumerate(records, start=1)]
            self._replace(numbered)
            self.last_seq = len(numbered)

    def _replace(self, records: list[dict]) -> None:
        """Write `records` to a new file that replaces the log atomically: a crash leaves the old log
        or the new one, never a mix."""
        staging = self.path.with_suffix(self.path.suffix + ".compacting")
        with open(staging, "wb") as handle:
            for record in records:
                handle.write(frame(record))
            handle.flush()
            os.fsync(handle.fileno())
        if self._file is not None:
            self._file.close()
        os.replace(staging, self.path)
        fsync_directory(self.path.parent)
        self._file = open(self.path, "ab")  # noqa: SIM115


def frame(record: dict) -> bytes:
    """One record as the bytes of its frame."""
    payload = json.dumps(record, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_frame(data: bytes, offset: int) -> tuple[dict, int] | None:
    if offset + HEADER.size > len(data):
        return None
    magic, length, crc = HEADER.unpack_from(data, offset)
    start, end = offset + HEADER.size, offset + HEADER.size + length
    if magic != MAGIC or length > MAX_RECORD_BYTES or end > len(data):
        return None
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        record = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record, end


def _intact_frame_after(data: bytes, offset: int) -> bool:
    position = data.find(MAGIC, offset)
    while position != -1:
        if read_frame(data, position) is not None:
            return True
        position = data.find(MAGIC, position + 1)
    return False


def fsync_directory(folder: Path) -> None:
    """Make a created or renamed file's directory entry durable too (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
