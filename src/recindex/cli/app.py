"""The command groups, the consoles and the entry point: user mistakes (bad files, unknown ids,
corrupt bundles) print one clear line and exit with status 2; nothing a user can cause ends in a
traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from recindex import __version__
from recindex.errors import RecIndexError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Retrieval for recommender systems.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and fetch datasets.")
app.add_typer(data_app, name="data")
index_app = typer.Typer(no_args_is_help=True, help="Build and list the item indexes of a bundle.")
app.add_typer(index_app, name="index")
wal_app = typer.Typer(no_args_is_help=True, help="Check and repair a service's write-ahead log.")
app.add_typer(wal_app, name="wal")
experiment_app = typer.Typer(no_args_is_help=True, help="Run experiments declared in TOML (experiments/).")
app.add_typer(experiment_app, name="experiment")
# Tables are wide: when the output is a file or a pipe, do not squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200, emoji=False)
errors = Console(stderr=True, emoji=False)  # no emoji: 'sharded:x:exact' must print as typed

# Where dataset names are looked up (recindex.data.registry.default_data_dir); every help text and the
# README state it in these words.
DATA_DIR_ORDER = "--data-dir, else $RECINDEX_DATA_DIR, else ../shared/data or ./data, whichever exists first"
DATA_DIR = typer.Option(
    None, "--data-dir", help=f"Folder with the datasets. Datasets are read from {DATA_DIR_ORDER}."
)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"recindex {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Retrieval for recommender systems."""


def main() -> None:
    try:
        app()
    except RecIndexError as error:
        errors.print(f"[red]error:[/] {escape(str(error))}")
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
