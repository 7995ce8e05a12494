"""Command-line options that are not a command's own: --version, --set errors."""

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from recindex import __version__
from recindex.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"recindex {__version__}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == declared


def _data_dir_help(*path: str) -> str:
    import typer

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    option = next(p for p in command.params if "--data-dir" in p.opts)
    return option.help


def test_the_data_directory_order_is_stated_the_same_way_everywhere():
    from recindex.cli import DATA_DIR_ORDER

    for path in (("train",), ("data", "stats"), ("data", "download")):
        assert f"Datasets are read from {DATA_DIR_ORDER}." in _data_dir_help(*path), path
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").replace("`", "").split())
    assert f"Datasets are read from {DATA_DIR_ORDER}." in readme


def test_the_data_directory_order_is_the_one_the_code_follows(tmp_path, monkeypatch):
    """The order DATA_DIR_ORDER states, as default_data_dir applies it (--data-dir is passed around it)."""
    from recindex.data.registry import default_data_dir

    work = tmp_path / "checkout"
    (work / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("RECINDEX_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("RECINDEX_DATA_DIR")
    assert default_data_dir() == Path("../shared/data")
    (tmp_path / "shared" / "data").rmdir()
    assert default_data_dir() == Path("data")
    (work / "data").rmdir()
    assert default_data_dir() is None
