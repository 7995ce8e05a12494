"""One writer per state folder: an OS lock on `state_dir/writer.lock`, held for the writer's lifetime.

Two services writing one state folder interleave their log records (two records numbered 2, then a
log that no longer opens), so the writing service, and `recindex wal repair`, take this lock first
and refuse to start while another process holds it, naming that process. `serve --workers N` holds it
once, in the supervising process, for its workers, which share the log through its own per-append
lock (serve.wal). Read-only followers do not take it: they never write.

The lock is `flock` on POSIX (Linux, macOS): the kernel drops it when the holder's last descriptor
closes, which includes any death, `kill -9` too, so nothing is left to clean up. The file itself stays,
holding the last holder's pid, host and start time; it is information, not the lock. Elsewhere the
`filelock` package (installed with torch) locks the same file; there the holder is described in
`writer.lock.json` beside it. `flock` is not reliable on some network file systems: keep the state
folder on a local disk.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from recindex.errors import RecIndexError

LOCK_FILE = "writer.lock"

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


class StateLocked(RecIndexError):
    """Another process holds the state folder's writer lock."""


class StateLock:
    """The writer lock of one state folder. `acquire()` raises StateLocked when it is held elsewhere;
    `release()` (or the holder's exit, however it happens) frees it."""

    def __init__(self, folder: str | Path, purpose: str = "recindex serve"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None
        self._fallback = None  # filelock.FileLock where fcntl is missing

    @property
    def held(self) -> bool:
        return self._fd is not None or self._fallback is not None

    def acquire(self) -> StateLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_with_filelock()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise self._locked(holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_record(self.purpose), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _locked(self, holder: dict | None) -> StateLocked:
        if holder:
            who = (
                f"{holder.get('purpose', 'a process')} (pid {holder.get('pid')} on host "
                f"{holder.get('host')}, since {holder.get('since')})"
            )
        else:
            who = "another process (it has not said which yet)"
        return StateLocked(
            f"{self.folder} is in use by {who}: one state folder takes one writing service. Stop that "
            f"process, give this one another state_dir (--settings or RECINDEX_STATE_DIR), or serve "
            f"reads only beside it (RECINDEX_READ_ONLY=true: it follows the log that one writes)"
        )

    def _acquire_with_filelock(self) -> StateLock:
        import filelock

        info = self.path.with_name(LOCK_FILE + ".json")
        lock = filelock.FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            try:
                holder = json.loads(info.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = None
            raise self._locked(holder) from None
        info.write_bytes(_holder_record(self.purpose))
        self._fallback = lock
        return self


def _holder_record(purpose: str) -> bytes:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "purpose": purpose,
    }
    return json.dumps(record).encode("utf-8")


def _read_holder(fd: int) -> dict | None:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
