"""The README's quick tour, run as written, in order, on a tiny synthetic dataset.

The commands are read from the ```bash block under "## A quick tour"; only the dataset and the sizes
change: `beauty` becomes a small synthetic dataset and every `train` gets `--set` overrides that make
it small. `serve` blocks, so its line runs with uvicorn replaced by a check of `/readyz` on the very app
the command built. Anything else the README says is run exactly, so a tour that drifts from the code
(a config pointing at another bundle, a flag that changed) fails here.
"""

from __future__ import annotations

import re
import shlex
import shutil

import torch
from fastapi.testclient import TestClient
from tests.conftest import ROOT, tiny_settings
from typer.testing import CliRunner

from recindex.cli import app

DATASET = "synthetic:n_users=120,n_items=60,n_attributes=12,seed=5"
# Sizes only: the tour's own settings (configs, epochs, init_from, ...) stay as the README has them.
SMALL = [
    *tiny_settings(DATASET, epochs=2),
    "train.patience=5",
    "eval.batch_size=256",
    "mfli.codewords=4",
    "mfli.quant_start=0",
    "mfli.level_gap=1",
    "uri.k=4",
    "uri.layer_epochs=1",
    "uri.start_epochs=1",
    "uri.final_epochs=1",
    "uri.ranker_epochs=1",
    "uri.batch_size=64",
    "uri.beam=4",
]


def tour_commands(readme: str) -> list[list[str]]:
    """The commands of the quick tour's bash block, as argument lists (comments and `&&` split off)."""
    section = readme.split("## A quick tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README.md: no ```bash block under '## A quick tour'"
    commands = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:end])
            words = words[end + 1 :]
    return commands


def small(command: list[str]) -> list[str]:
    """The same command on the tiny dataset: `beauty` replaced, and size overrides after a `train`'s own."""
    assert command[0] == "recindex", f"the tour should run recindex, not {command[0]!r}"
    args = [DATASET if word == "beauty" else word for word in command[1:]]
    if args[0] == "train":
        args += [part for setting in SMALL for part in ("--set", setting)]
    return args


def test_the_readme_tour_parses_into_commands():
    commands = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {"data", "train", "evaluate", "recommend", "index", "serve"} <= {c[1] for c in commands}
    # The continued line keeps its quoted TOML string as one argument.
    assert "sci.swapped_negatives=\"in_batch\"" in [w for c in commands for w in c]


def test_the_readme_tour_runs_as_written(tmp_path, monkeypatch, capfd):
    import uvicorn

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECINDEX_THREADS", "1")
    served = []

    def serve_once(api, **_):  # stands in for uvicorn.run: the app the command built is ready
        with TestClient(api) as client:
            served.append(client.get("/readyz").status_code)

    monkeypatch.setattr(uvicorn, "run", serve_once)
    runner = CliRunner()
    commands = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    try:
        for command in commands:
            result = runner.invoke(app, small(command))
            assert result.exit_code == 0, f"{shlex.join(command)}\n-> {result.output}\n{result.exception!r}"
    finally:
        torch.set_num_threads(1)  # training and serving set the thread count for the process
    assert served == [200]
    assert (tmp_path / "leaves.png").is_file()
    assert "WARNING clustering" not in capfd.readouterr().err  # FAISS's, from C++, on small catalogues
