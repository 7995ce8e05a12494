"""`recindex data`: inspect and fetch datasets."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from recindex.cli.app import DATA_DIR, DATA_DIR_ORDER, console, data_app
from recindex.cli.present import dataset_table, shards_table
from recindex.data.download import download
from recindex.data.registry import load_dataset
from recindex.data.user_shards import is_parquet_folder, partition


@data_app.command("stats")
def data_stats(
    dataset: str = typer.Argument(..., help="A name (beauty, ml-100k, synthetic, ...) or a path."),
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Counts, sequence lengths and features of a dataset (a folder of Parquet files is streamed)."""
    if is_parquet_folder(Path(dataset)):  # read in user shards on disk: never whole in memory
        with partition(Path(dataset)) as shards:
            console.print(shards_table(shards))
        return
    console.print(dataset_table(load_dataset(dataset, data_dir)))


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="beauty, sports, home-kitchen, lastfm or ml-100k."),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Where to put the files (default: $RECINDEX_DATA_DIR, else ./data). "
        f"Datasets are read from {DATA_DIR_ORDER}.",
    ),
) -> None:
    """Fetch a public dataset and verify its checksums."""
    if data_dir is None:
        data_dir = Path(os.environ.get("RECINDEX_DATA_DIR") or "data")
    folder = download(name, data_dir)
    console.print(f"[green]{name}[/] is in {folder}")
