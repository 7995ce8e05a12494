"""A process that watches its parent ends when the parent does, by the portable path alone (the pid
watcher; Linux's PR_SET_PDEATHSIG is switched off here): the fallback `serve --workers N` workers rely on
where the kernel sends no signal. tests/service/test_workers.py checks the whole of it on real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

ORPHAN = f"""
import os, sys, time
sys.path.insert(0, {str(SRC)!r})
from recindex.serve import parent_watch
parent_watch._ask_kernel_for_sigterm = lambda: False  # the watcher alone
parent_watch.end_with_parent(os.getppid())
print("watching", flush=True)
time.sleep(120)
"""

# The parent starts the watcher, waits until it watches, says its pid and exits (the orphan keeps no
# pipe of the test's open, so the test does not wait on it).
PARENT = f"""
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", {ORPHAN!r}], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
)
assert child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_the_watcher_alone_ends_a_process_whose_parent_exits():
    parent = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, timeout=120)
    assert parent.returncode == 0, parent.stderr
    orphan = int(parent.stdout.strip())
    try:
        deadline = time.monotonic() + 10
        while running(orphan):
            assert time.monotonic() < deadline, "the orphan outlived its parent by 10 s"
            time.sleep(0.05)
    finally:
        if running(orphan):
            os.kill(orphan, 9)
