"""docs/python.md runs: its ```python blocks, in order, in one namespace, in a temporary folder."""

import re
from pathlib import Path

import pytest
import torch

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_the_guide_uses_the_public_entry_points():
    code = "\n".join(python_blocks(GUIDE.read_text(encoding="utf-8")))
    for entry in (
        "recindex.data.registry import load_dataset",
        "recindex.config import load_config",
        "recindex.pipelines.experiment import run_experiment",
        "recindex.pipelines import load_bundle",
        "recindex.pipelines.recommend import",
        "recindex.pipelines.indexes import build_bundle_index",
        "index.search(",
        "filter=",
        "recindex.serve.app import create_app",
    ):
        assert entry in code, f"docs/python.md no longer shows {entry!r}"


def test_the_python_guide_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "python_guide"}
    blocks = python_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    try:
        for number, block in enumerate(blocks, start=1):
            try:
                exec(compile(block, f"docs/python.md, python block {number}", "exec"), namespace)
            except Exception as error:  # name the block, not just the line inside it
                pytest.fail(f"docs/python.md, python block {number} failed: {error!r}\n{block}")
    finally:
        torch.set_num_threads(1)  # training sets the thread count for the process
    printed = capsys.readouterr().out
    assert "valid Recall@10" in printed and "faiss-HNSW32" in printed
    assert namespace["answer"]["items"]
    # The filters did what the guide says they do.
    popularity = namespace["bundle"].data.item_counts()
    found = namespace["found"].ids[0]
    assert len(found) == 5 and all(10 <= popularity[i] < 40 for i in found if i >= 0)
    listed = namespace["listed"].ids[0]
    assert all(i in range(1, 7) and popularity[i] >= 10 for i in listed if i >= 0)
