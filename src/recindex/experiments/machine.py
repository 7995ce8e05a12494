"""What a run records about where it ran: the machine, the library versions, the commit and the command."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

import recindex


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", *args], cwd=Path(recindex.__file__).parent, capture_output=True, text=True, timeout=5
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return ""


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_info(command: list[str] | None = None) -> dict:
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", ".").splitlines()]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(command if command is not None else ["recindex", *sys.argv[1:]]),
        "cwd": os.getcwd(),
        "git": {"commit": _git("rev-parse", "HEAD"), "dirty": dirty},
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            "recindex": recindex.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "faiss": faiss.__version__,
        },
    }
