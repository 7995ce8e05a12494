"""Batch item-embedding export: an item table of any size, encoded by a bundle's item tower in batches
into the memory-mapped shards of `pipelines.embedding_shards`, resumable, split over processes.

Memory is bounded by one batch of rows (`batch_rows`: the Arrow batch, its token lists and vectors)
plus the shard being written (its vectors through a memory map, flushed when it ends; its ids and
bundle indices in memory, 8-16 bytes a row), whatever the table's size.

The item tower runs on `device` (the CPU by default; a GPU with `--device cuda`).

Shard s covers rows s * shard_rows ... of the table; process `rank` of `world` writes the shards with
s % world == rank (`--shard-of R/N`, or torchrun's RANK and WORLD_SIZE). Vectors depend on the item
and the bundle only, not on the batch size or on which process encoded them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recindex.bundle import Bundle
from recindex.data.item_table import open_item_table
from recindex.errors import RecIndexError
from recindex.models.devices import resolve_device
from recindex.pipelines.embedding_shards import ShardFolder, ShardPlan
from recindex.pipelines.item_encoder import ItemEncoder
from recindex.progress import RateProgress

MAX_BATCH_ROWS = 1_000_000
SHARD_ROWS = 1_000_000


@dataclass(frozen=True)
class EmbedResult:
    folder: Path
    manifest: Path | None  # None while other processes' shards are missing
    shards_written: list[int]
    shards_kept: list[int]  # finished by an earlier run, checked and kept
    rows_encoded: int
    cold: int  # of those, items encoded from content
    seconds: float


def parse_shard_of(text: str) -> tuple[int, int]:
    """`R/N` -> (R, N): this process's part of the shards, 0 <= R < N."""
    rank, slash, world = text.partition("/")
    if not (slash and rank.isdigit() and world.isdigit() and 0 <= int(rank) < int(world)):
        raise RecIndexError(f"--shard-of takes R/N with 0 <= R < N (e.g. 0/4), got {text!r}")
    return int(rank), int(world)


def shard_of_environment() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun sets them, or (0, 1) outside torchrun."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return 0, 1
    return parse_shard_of(f"{rank}/{world}")


def embed_items(
    bundle: Bundle,
    items: Path,
    out: Path,
    *,
    batch_rows: int = 4096,
    shard_rows: int = SHARD_ROWS,
    dtype: str = "float32",
    resume: bool = False,
    shard_of: tuple[int, int] = (0, 1),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> EmbedResult:
    """`device`: cpu | cuda | cuda:N | auto, where the item tower runs (under torchrun, `cuda` and `auto`
    take the process's own GPU, LOCAL_RANK). The CPU is the default: there the bundle's own items get
    exactly the vectors of its item_embeddings.npy; a GPU's arithmetic differs in the last bits."""
    if not isinstance(batch_rows, int) or not 0 < batch_rows <= MAX_BATCH_ROWS:
        raise RecIndexError(f"batch size must be a whole number in 1..{MAX_BATCH_ROWS:,}, got {batch_rows!r}")
    rank, world = shard_of
    local_rank = os.environ.get("LOCAL_RANK")
    where = resolve_device(
        device, int(local_rank) if local_rank and local_rank.isdigit() else None, "--device"
    )
    table = open_item_table(Path(items))
    if table.n_rows == 0:
        raise RecIndexError(f"{items}: the item table has no rows")
    embedding = bundle.manifest["embedding"]
    source = table.source
    plan = ShardPlan(
        bundle_id=bundle.bundle_id,
        dim=int(embedding["dim"]),
        metric=embedding["metric"],
        normalized=bool(embedding.get("normalized", False)),
        dtype=dtype,
        n_rows=table.n_rows,
        shard_rows=shard_rows,
        items={"files": _files(source)},
    )
    folder = ShardFolder.start(Path(out), plan, resume=resume, shared=world > 1)
    mine = [shard for shard in range(plan.n_shards) if shard % world == rank]
    kept = [shard for shard in mine if resume and folder.finished(shard)]
    todo = [shard for shard in mine if shard not in kept]
    if log and kept:
        log(f"kept {len(kept)} finished shard(s), checked against their sha256; {len(todo)} to write")
    encoder = ItemEncoder(bundle, where)
    total = sum(_size(plan, s) for s in mine)
    done = sum(_size(plan, s) for s in kept)
    started = time.perf_counter()
    title = f"embedding (shards {rank}/{world})"
    with RateProgress(total, title, "items", completed=done, enabled=progress) as bar:
        for shard in todo:
            folder.write(shard, _encoded(table, encoder, plan, shard, batch_rows, bar))
    seconds = time.perf_counter() - started
    manifest = folder.finish()
    return EmbedResult(Path(out), manifest, todo, kept, total - done, encoder.cold, seconds)


def _encoded(table, encoder: ItemEncoder, plan: ShardPlan, shard: int, batch_rows: int, bar: RateProgress):
    lo, hi = plan.rows_of(shard)
    for rows in table.rows(lo, hi, batch_rows):
        vectors, indices = encoder.encode(rows)
        bar.advance(len(rows))
        yield vectors, rows.ids, indices


def _size(plan: ShardPlan, shard: int) -> int:
    lo, hi = plan.rows_of(shard)
    return hi - lo


def _files(source) -> list[list]:
    """[file name, rows] of each file of the table: a resumed export must read the same rows."""
    names = [f.name if source.path.is_file() else str(f.relative_to(source.path)) for f in source.files]
    return [[name, rows] for name, rows in zip(names, source.file_rows, strict=True)]
