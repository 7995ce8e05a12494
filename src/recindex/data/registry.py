"""Resolve a dataset spec to `Interactions`: a known name, a path in a supported format, or `synthetic`.

Names resolve inside a data directory: `--data-dir`, else `$RECINDEX_DATA_DIR`, else `../shared/data`
(relative to the working directory) when it exists, else `./data` (where `recindex data download` puts
files by default) when it exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recindex.data.interactions import Interactions
from recindex.data.movielens import load_movielens_100k
from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.parquet_source import parquet_files
from recindex.data.s3rec import load_s3rec
from recindex.data.synthetic import SyntheticConfig, generate
from recindex.data.tabular import NUMERIC_BUCKETS, load_table
from recindex.errors import RecIndexError


@dataclass(frozen=True)
class KnownDataset:
    folder: str
    loader: Callable[[Path], Interactions]
    description: str
    required: tuple[str, ...]  # files the loader cannot do without; a folder lacking one is not the dataset


def _s3rec(stem: str, name: str, layout: str) -> Callable[[Path], Interactions]:
    def load(folder: Path) -> Interactions:
        attributes = folder / f"{stem}_item2attributes.json"
        return load_s3rec(
            folder / f"{stem}.txt",
            attributes if attributes.exists() else None,
            folder / f"{stem}_attribute_names.json",
            name=name,
            items_path=folder / f"{stem}_items.tsv",
            layout=layout,
        )

    return load


def _movielens(folder: Path) -> Interactions:
    return load_movielens_100k(folder)


AMAZON = "brand+category"  # S3-Rec's Amazon attribute lists: the brand, then the categories
KNOWN_DATASETS: dict[str, KnownDataset] = {
    "beauty": KnownDataset(
        "amazon-beauty", _s3rec("Beauty", "beauty", AMAZON), "Amazon Beauty 5-core (S3-Rec)", ("Beauty.txt",)
    ),
    "sports": KnownDataset(
        "amazon-sports",
        _s3rec("Sports_and_Outdoors", "sports", AMAZON),
        "Amazon Sports and Outdoors 5-core",
        ("Sports_and_Outdoors.txt",),
    ),
    "home-kitchen": KnownDataset(
        "amazon-home-kitchen",
        _s3rec("Home_and_Kitchen", "home-kitchen", AMAZON),
        "Amazon Home and Kitchen 5-core",
        ("Home_and_Kitchen.txt",),
    ),
    "lastfm": KnownDataset(
        "lastfm", _s3rec("LastFM", "lastfm", "tag"), "Last.fm (HetRec 2011) with tags", ("LastFM.txt",)
    ),
    "ml-100k": KnownDataset(
        "ml-100k", _movielens, "MovieLens 100K with genres, year and demographics", ("u.data",)
    ),
}


def default_data_dir() -> Path | None:
    env = os.environ.get("RECINDEX_DATA_DIR")
    if env:
        return Path(env)
    for candidate in (Path("../shared/data"), Path("data")):
        if candidate.is_dir():
            return candidate
    return None


def load_dataset(
    spec: str, data_dir: str | Path | None = None, *, numeric_buckets: int | None = None
) -> Interactions:
    """Load `spec`: a known name, `synthetic[:key=value,...]`, or a file/directory path.
    `numeric_buckets`: quantile buckets of a table's numeric columns (data.tabular; None: its default)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return generate(SyntheticConfig.from_spec(spec))
    if spec in KNOWN_DATASETS:
        known = KNOWN_DATASETS[spec]
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if root is None:
            raise RecIndexError(
                f"dataset {spec!r} needs a data directory: pass --data-dir, set RECINDEX_DATA_DIR, "
                f"or fetch it with 'recindex data download {spec}'"
            )
        folder = root / known.folder
        fetch = f"Fetch it with 'recindex data download {spec} --data-dir {root}'"
        if not folder.is_dir():
            raise RecIndexError(f"dataset {spec!r} not found: no folder {folder}. {fetch}")
        missing = [name for name in known.required if not (folder / name).is_file()]
        if missing:  # e.g. left by an interrupted copy: as good as no dataset, and said the same way
            raise RecIndexError(
                f"dataset {spec!r} not found: the folder {folder} lacks {', '.join(missing)}. {fetch}"
            )
        return known.loader(folder)
    path = Path(spec)
    if path.exists():
        return load_path(path, numeric_buckets)
    names = ", ".join([*KNOWN_DATASETS, "synthetic"])
    raise RecIndexError(f"unknown dataset {spec!r}: not a file or folder, and not one of {names}")


def load_path(path: Path, numeric_buckets: int | None = None) -> Interactions:
    """Load a file or folder by its form: ML-100K folder, a folder of Parquet files, S3-Rec .txt, CSV or
    Parquet."""
    buckets = NUMERIC_BUCKETS if numeric_buckets is None else numeric_buckets
    if path.is_dir():
        if (path / "u.data").exists():
            return _movielens(path)
        if parquet_files(path):
            return load_parquet_dir(path, buckets)
        raise RecIndexError(
            f"{path}: a folder must hold Parquet files (*.parquet, *.pq) with user and item columns, or be "
            "a MovieLens-100K folder (with u.data); it has neither"
        )
    suffix = path.suffix.lower()
    if suffix == ".txt":
        stem = path.stem
        attributes = path.with_name(f"{stem}_item2attributes.json")
        return load_s3rec(
            path,
            attributes if attributes.exists() else None,
            path.with_name(f"{stem}_attribute_names.json"),
            items_path=path.with_name(f"{stem}_items.tsv"),
        )
    if suffix in (".csv", ".tsv", ".parquet", ".pq"):
        return load_table(path, buckets)
    raise RecIndexError(
        f"{path}: unsupported file type {suffix!r}; expected .txt (S3-Rec), .csv, .tsv or .parquet"
    )
