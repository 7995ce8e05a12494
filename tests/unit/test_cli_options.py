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
