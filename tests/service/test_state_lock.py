"""One writer per state folder: a second process contends for the lock, and kill -9 frees it.

The lock is what keeps two services from interleaving one log (records 1, 2, 2 and a log that no
longer opens). The processes are real, because that is where the lock must hold; test_serve_command
does the same with `recindex serve` itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recindex.serve.state_lock import StateLock, StateLocked
from recindex.serve.wal_repair import repair_log

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from recindex.serve.state_lock import StateLock
StateLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def child_env(**extra) -> dict:
    """The environment of a child process that runs this worktree's code (not an installed copy)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def kill_9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def test_a_second_process_is_refused_while_the_first_holds_the_lock_and_kill_9_frees_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateLocked) as refused:
            StateLock(tmp_path).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message, message
        # the repair command takes the same lock: it cannot cut a log under a running writer
        with pytest.raises(StateLocked):
            repair_log(tmp_path)
    finally:
        kill_9(holder)
    with StateLock(tmp_path) as lock:  # the kernel dropped the dead holder's lock: nothing to clean
        assert lock.held
