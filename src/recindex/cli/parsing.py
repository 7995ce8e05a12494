"""The command line's own value forms: durations and `key=value` settings."""

from __future__ import annotations

import re
import tomllib

from recindex.errors import RecIndexError


def parse_duration(text: str, flag: str) -> float:
    """'90', '90s', '30m', '1.5h' -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text)
    seconds = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]] if match else 0.0
    if not seconds > 0:
        raise RecIndexError(f"{flag} {text!r}: expected a duration above 0 such as 90s, 30m or 2h")
    return seconds


def parse_assignments(items: list[str], flag: str) -> dict:
    """`key=value` strings -> dict; values are TOML (numbers, true/false, "quoted"), else plain strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecIndexError(f"{flag} {item!r}: expected key=value, e.g. {flag} ef=256")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out
