"""`recindex embed`: a bundle's item vectors for an item table of any size, in memory-mapped shards."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from recindex.cli.app import app, console
from recindex.pipelines import load_bundle
from recindex.pipelines.embed import (
    MAX_BATCH_ROWS,
    SHARD_ROWS,
    embed_items,
    parse_shard_of,
    shard_of_environment,
)
from recindex.pipelines.embedding_shards import DTYPES


@app.command()
def embed(
    bundle: Path = typer.Argument(..., help="A bundle directory written by 'recindex train'."),
    items: Path = typer.Option(
        ...,
        "--items",
        help="Item table: a Parquet file or folder with an 'item' id column and item_<field> feature "
        "columns (one row per item).",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the shards and their manifest."),
    batch_size: int = typer.Option(
        4096, "--batch-size", min=1, max=MAX_BATCH_ROWS, help="Items encoded at once."
    ),
    shard_size: int = typer.Option(SHARD_ROWS, "--shard-size", min=1, help="Items per shard file."),
    dtype: str = typer.Option("float32", "--dtype", help=f"Stored precision: {' or '.join(DTYPES)}."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted export: keep its checked shards, write the rest."
    ),
    shard_of: str | None = typer.Option(
        None,
        "--shard-of",
        help="R/N: this process writes shards R, R+N, ... (default: torchrun's RANK/WORLD_SIZE, else 0/1).",
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="Where the item tower runs: cpu, cuda, cuda:N or auto (a GPU when torch sees one; under "
        "torchrun each process takes its own, LOCAL_RANK).",
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads (0: torch's default)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Encode a table's items with the bundle's item tower into memory-mapped shards (resumable).

    Items of the bundle are encoded as in the bundle, others (cold items) from their features;
    'recindex index build BUNDLE --embeddings OUT' indexes the bundle's items from the shards."""
    if threads:
        torch.set_num_threads(threads)
    part = parse_shard_of(shard_of) if shard_of is not None else shard_of_environment()
    loaded = load_bundle(bundle)
    result = embed_items(
        loaded,
        items,
        out,
        batch_rows=batch_size,
        shard_rows=shard_size,
        dtype=dtype,
        resume=resume,
        shard_of=part,
        progress=not quiet,
        log=console.print,
        device=device,
    )
    rate = result.rows_encoded / result.seconds if result.seconds else 0.0
    console.print(
        f"[green]encoded[/] {result.rows_encoded:,} items ({result.cold:,} cold, from their features) in "
        f"{result.seconds:.1f}s ({rate:,.0f} items/s): {len(result.shards_written)} shard(s) written, "
        f"{len(result.shards_kept)} kept"
    )
    if result.manifest is not None:
        console.print(f"every shard is there: manifest {result.manifest}")
    else:
        console.print(
            f"shards of other processes are still missing; the last to finish writes {out}/manifest.json"
        )
