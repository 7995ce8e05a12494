"""docs/data.md runs as written: its CSV is saved under the name the text gives it, then its Python
blocks run in order, in one namespace, in that folder (their asserts state what the reader should see)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.conftest import ROOT

DOC = ROOT / "docs" / "data.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
CSV_FILE = re.compile(r"Save this as `([\w.-]+\.csv)`:\s*$")


def blocks() -> list[tuple[str, str, str]]:
    """(language, code, the text just before the block) of every fenced block, in order."""
    text = DOC.read_text(encoding="utf-8")
    return [(m[1], m[2], text[: m.start()].rstrip().rsplit("\n", 1)[-1]) for m in BLOCK.finditer(text)]


def test_the_doc_has_a_csv_and_python_to_run():
    languages = [language for language, _, _ in blocks()]
    assert languages.count("csv") == 1 and languages.count("python") >= 2


def test_the_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_data"}
    for language, code, before in blocks():
        if language == "csv":
            name = CSV_FILE.search(before)
            assert name, f"say which file the CSV is ('Save this as `name.csv`:'), found {before!r}"
            (tmp_path / name[1]).write_text(code, encoding="utf-8")
        elif language == "python":
            exec(compile(code, f"{DOC}:python block", "exec"), namespace)
