"""The workers of `serve --workers N` end when their supervisor dies.

A supervisor killed with SIGKILL cannot stop its workers; left alone they would keep the port and keep
serving, and keep appending to the state folder's log while its writer lock (the supervisor's) is free
for a second service. So each worker asks Linux to send it SIGTERM when its parent dies
(prctl PR_SET_PDEATHSIG), and a thread also watches for the parent's pid to change: the portable way,
which also covers a parent that died before the request was made. Either way the worker gets SIGTERM,
which uvicorn answers with a graceful shutdown; a worker still there GRACE_SECONDS later is ended.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 0.25
GRACE_SECONDS = 10.0


def end_with_supervisor() -> bool:
    """In a process that a multiprocessing supervisor started (uvicorn's workers), arrange to end when
    that parent dies; returns whether there was such a parent (a process started otherwise is left
    alone)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False
    end_with_parent(parent.pid)
    return True


def end_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process once `parent_pid` is no longer its parent (now, if it already is not)."""
    _ask_kernel_for_sigterm()
    watcher = threading.Thread(target=_watch, args=(parent_pid,), name="recindex-parent-watch", daemon=True)
    watcher.start()


def _ask_kernel_for_sigterm() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc to load, or no prctl in it: the watcher alone
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: stop accepting, finish, run the lifespan end
    time.sleep(GRACE_SECONDS)
    os._exit(1)  # a shutdown that hangs (a request that never ends) must not keep an orphan alive
