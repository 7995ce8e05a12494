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

Several processes on one machine (`serve --workers N`) share one log when it is opened `shared`: each
append takes an `flock` on `wal.lock` beside the log, reads whatever the others appended since its last
look (to number its record after theirs), writes and fsyncs, and lets go; compaction replaces the file
under the same lock. Every process also reads the log as a tail (`read_new`), in file order, which is
how each applies every process's writes in one order. Why an flock per append rather than one writer
the others forward to: the kernel orders the appends and frees the lock when a holder dies (kill -9
too), so there is no leader to elect, restart or route to, and a write costs one fsync either way.

Why by hand: the framing is twenty lines, and a database (SQLite, LMDB) would bring its own durability
settings to get right for no gain; vectors travel as base64 of float32 bytes to keep frames small.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from recindex.errors import RecIndexError

MAGIC = b"RIW1"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
MAX_RECORD_BYTES = 64 << 20
APPEND_LOCK = "wal.lock"  # beside the log (which compaction replaces; these files stay)
COMPACTION_LOCK = "snapshot.lock"  # held shared by a process loading the snapshot, exclusive by compaction
TAIL_POLL_SECONDS = 0.002  # how often a follower looks for records others appended (a stat and a read)

try:
    import fcntl
except ImportError:  # not POSIX: a shared log is refused there (see `WriteAheadLog.__init__`)
    fcntl = None
SHARED_LOGS = fcntl is not None  # whether several processes can share one log here


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
    """Append-only, fsynced, crash-safe record log. Appends are serialised between threads, and with
    `shared=True` between processes too (an flock per append); `read_new` reads it as a tail."""

    def __init__(self, path: str | Path, *, fsync: bool = True, shared: bool = False):
        if shared and fcntl is None:
            raise RecIndexError("a log shared between processes needs flock (POSIX): serve with one worker")
        self.path = Path(path)
        self.fsync = fsync
        self.shared_log = shared
        self._lock = threading.RLock()
        self._file = None
        self.last_seq = 0
        self._end = 0  # where the records this process knows of end (appends go after it)
        self._append_lock = _FileLock(self.path.parent / APPEND_LOCK, self._lock, shared)
        self._compaction_lock = _FileLock(self.path.parent / COMPACTION_LOCK, self._lock, shared)
        self._tail = None  # the file `read_new` reads, held open across a replacement
        self._tail_at = 0

    @property
    def name(self) -> str:
        """The log's file name in the state folder (what the state record names)."""
        return self.path.name

    def open(self) -> WriteAheadLog:
        """Check the log, cut off a torn last frame, and get ready to append after it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._append_lock.hold():
            good_end = 0
            for _, end in self._scan():
                good_end = end
            with open(self.path, "ab") as handle:
                if handle.tell() != good_end:
                    handle.truncate(good_end)  # the torn tail was never acknowledged
                    os.fsync(handle.fileno())
            self._file = open(self.path, "ab")  # noqa: SIM115 (held open for appends)
            self._end = good_end
            fsync_directory(self.path.parent)
        return self

    def close(self) -> None:
        for handle in (self._file, self._tail):
            if handle is not None:
                handle.close()
        self._file = self._tail = None
        self._append_lock.close()
        self._compaction_lock.close()

    def __enter__(self) -> WriteAheadLog:
        return self if self._file is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def exclusive(self):
        """No other process appends to the log, replaces it or loads its snapshot while this is held
        (compaction holds it); re-entrant within the holding thread."""
        return _both(self._compaction_lock.hold(), self._append_lock.hold())

    def loading(self):
        """No compaction replaces the log or the snapshot it goes with while this is held; several
        processes may hold it at once, and appends go on (a process loading the state holds it)."""
        return self._compaction_lock.hold(shared=True)

    def append(self, op: str, **fields) -> int:
        """Write one record and make it durable; returns its sequence number."""
        if self._file is None:
            raise RecIndexError("the write-ahead log is not open")
        with self._append_lock.hold():
            if self.shared_log:
                self._catch_up_for_append()
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
            self._end += len(encoded)
            return seq

    def _catch_up_for_append(self) -> None:
        """(Holding the flock.) Follow a replacement of the file, learn the records other processes
        appended, and cut a frame torn by one that died mid-append: it was never acknowledged."""
        if os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino:
            self._file.close()
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._end = 0
        size = os.fstat(self._file.fileno()).st_size
        if size == self._end:
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._end)
            data = handle.read()
        offset = 0
        for record, end in _frames(data, self.path, self._end):
            self.last_seq, offset = record["seq"], end
        self._end += offset
        if self._end != size:
            self._file.truncate(self._end)
            os.fsync(self._file.fileno())

    def read_new(self) -> list[dict]:
        """The records appended (by any process) since the last call, in order; from the start of the
        file the first time. A record being written is left for the next call. When compaction has
        replaced the file, what remains of the old one is read first, then the new one from its
        start (a `checkpoint` record, then what followed)."""
        with self._lock:
            if self._tail is None:
                try:
                    self._tail = open(self.path, "rb")  # noqa: SIM115 (held open: read as a tail)
                except FileNotFoundError:
                    return []
                self._tail_at = 0
            records = self._read_tail()
            try:
                replaced = os.stat(self.path).st_ino != os.fstat(self._tail.fileno()).st_ino
            except FileNotFoundError:
                replaced = False
            if replaced:  # the old file is final now: drain it, then go on in the new one
                records += self._read_tail()
                self._tail.close()
                self._tail = None
                records += self.read_new()
            return records

    def _read_tail(self) -> list[dict]:
        self._tail.seek(self._tail_at)
        data = self._tail.read()
        records = []
        for record, end in _frames(data, self.path, self._tail_at):
            records.append(record)
            advanced = end
        if records:
            self._tail_at += advanced
        return records

    def start(self, after: int) -> None:
        """Nothing to position: the file is read from its start, and a writer skips the records at or
        below the sequence number its snapshot covers."""

    def head(self) -> int:
        """The last sequence number the log holds now (0 when empty)."""
        last = 0
        for record, _ in self._scan():
            last = record["seq"]
        return last

    def wait(self, seconds: float) -> None:
        """Wait a little for records other processes may append (the file is polled)."""
        time.sleep(min(seconds, TAIL_POLL_SECONDS))

    def records(self, after: int = 0) -> Iterator[dict]:
        """The records with seq > `after`, in order."""
        for record, _ in self._scan():
            if record["seq"] > after:
                yield record

    def _scan(self) -> Iterator[tuple[dict, int]]:
        """(record, offset after it) for every intact frame; stops quietly at a torn last frame."""
        if not self.path.exists():
            return
        for record, end in _frames(self.path.read_bytes(), self.path, 0):
            self.last_seq = record["seq"]
            yield record, end

    def truncate_through(self, seq: int, **fields) -> int:
        """Drop the records with seq <= `seq` (covered by a snapshot); returns how many remain.

        A `checkpoint` record numbered `seq` (with `fields`) takes their place, so the numbering goes
        on from where it was after a restart too, and a snapshot's `seq` still means the same records.
        """
        with self.exclusive():
            keep = [record for record in self.records() if record["seq"] > seq]
            self._replace([{"seq": seq, "op": "checkpoint", **fields}, *keep])
            self.last_seq = max(self.last_seq, seq)
            return len(keep)

    def rewrite(self, records: list[dict]) -> None:
        """Replace the whole log by `records` (numbered from 1), e.g. the changes carried to a new bundle."""
        with self.exclusive():
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
            size = handle.tell()
        if self._file is not None:
            self._file.close()
        os.replace(staging, self.path)
        fsync_directory(self.path.parent)
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._end = size


class _FileLock:
    """An flock on `path`, re-entrant within the thread holding `thread_lock` (flock itself is per open
    file, so threads of one process would share it); a no-op unless `active`."""

    def __init__(self, path: Path, thread_lock: threading.RLock, active: bool):
        self.path, self.thread_lock, self.active = path, thread_lock, active
        self._fd: int | None = None
        self._depth = 0

    @contextmanager
    def hold(self, *, shared: bool = False):
        with self.thread_lock:
            if not self.active:
                yield
                return
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextmanager
def _both(first, second):
    with first, second:
        yield


def _frames(data: bytes, path: Path, base: int) -> Iterator[tuple[dict, int]]:
    """(record, offset after it within `data`) for the intact frames of `data` (bytes of the log from
    byte `base` on), in order; stops quietly at a torn (or still being written) last frame and raises
    WalCorrupt for a damaged frame followed by intact ones, or a break in the numbering."""
    offset, expected = 0, None
    while offset < len(data):
        found = read_frame(data, offset)
        if found is None:
            if _intact_frame_after(data, offset + 1):
                where = base + offset
                raise WalCorrupt(path, where, f"damaged record at byte {where} followed by intact ones")
            return
        record, end = found
        if expected is not None and record["seq"] != expected:
            problem = f"record {record['seq']} where {expected} was expected, at byte {base + offset}"
            raise WalCorrupt(path, base + offset, problem)
        expected = record["seq"] + 1
        offset = end
        yield record, offset


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
