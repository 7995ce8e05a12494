"""What the bar scripts (`*_bars.py`) share: a console, timestamped progress lines, PASS / NOT MET
verdicts and LABEL=BUNDLE arguments."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

console = Console(width=200)


def log(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]NOT MET[/red]"


def labelled(values: list[str]) -> list[tuple[str, str]]:
    """`LABEL=PATH` arguments -> (label, path) pairs (the label may itself contain '=')."""
    pairs = []
    for value in values:
        label, sep, path = value.rpartition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=BUNDLE, got {value!r}")
        pairs.append((label, path))
    return pairs


def write_report(report: dict, folder: str, part: str) -> Path:
    """The part's report, with the machine and commit it ran on, as FOLDER/PART.json."""
    from machine import run_info  # benchmarks/ is on the path when a script here runs

    report["machine"] = run_info()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{part}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    console.print(f"report: {path}")
    return path
