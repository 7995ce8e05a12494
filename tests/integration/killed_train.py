"""`recindex train` in a subprocess, killed with SIGKILL the moment a condition on its output holds: how
the resume tests interrupt a run at a chosen checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def overrides(settings: list[str]) -> list[str]:
    return [word for setting in settings for word in ("--set", setting)]


def train_killed_when(out: Path, settings: list[str], ready: Callable[[], bool], what: str) -> None:
    """Start `recindex train --out OUT` with `settings` and SIGKILL it as soon as `ready()` is true
    (polled every 2 ms, at most 600 s; `what` names the awaited state in the failure message)."""
    run = subprocess.Popen(
        [sys.executable, "-m", "recindex", "train", "--out", str(out), "--quiet", *overrides(settings)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    while not ready():
        assert run.poll() is None, run.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.002)
    run.send_signal(signal.SIGKILL)
    run.wait()
    run.stderr.close()
    assert run.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()  # killed mid-run, not after it
