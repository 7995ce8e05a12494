"""Small folders in the shape of the datasets we ship (S3-Rec Amazon, MovieLens-100K), for tests that
must run without the benchmark data: same files, same feature layout, a few dozen items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recindex.data.interactions import Interactions
from recindex.data.registry import KNOWN_DATASETS, load_dataset

# S3-Rec Amazon layout: each item's attribute list is its brand (when the brand is frequent enough to be
# kept) and then its categories; names carry the HTML entities of the scraped pages.
BRANDS = {1: "L&#39;Oreal Paris", 2: "Maybelline", 3: "Revlon", 4: "Clean &amp; Clear"}
CATEGORIES = {10: "Makeup", 11: "Eyes", 12: "Mascara", 13: "Skin Care", 14: "Face", 15: "Hair Care"}
PATHS = [[10, 11, 12], [10, 14], [13, 14], [15], [10, 11]]


def s3rec_items(n_items: int = 40, seed: int = 0) -> dict[int, list[int]]:
    """item -> attribute ids: a brand for most items, then one category path."""
    rng = np.random.default_rng(seed)
    items = {}
    for item in range(1, n_items + 1):
        brand = [] if item % 7 == 0 else [int(rng.choice(list(BRANDS)))]
        items[item] = brand + PATHS[item % len(PATHS)]
    return items


def write_s3rec(
    folder: Path, stem: str = "Beauty", n_users: int = 60, n_items: int = 40, seed: int = 0
) -> Path:
    """An S3-Rec folder: STEM.txt, STEM_item2attributes.json, STEM_attribute_names.json, STEM_items.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(3, 8)), replace=False)
        lines.append(" ".join(map(str, [user, *items.tolist()])))
    (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    attributes = s3rec_items(n_items, seed)
    mapping = {str(item): ids for item, ids in attributes.items()}
    (folder / f"{stem}_item2attributes.json").write_text(json.dumps(mapping))
    names = {str(k): v for k, v in {**BRANDS, **CATEGORIES}.items()}
    (folder / f"{stem}_attribute_names.json").write_text(json.dumps(names))
    rows = ["item_id\tasin\tidgenrec_textual_id\tattributes"]
    for item, ids in attributes.items():
        named = "|".join(names[str(a)] for a in ids)
        rows.append(f"{item}\tB{item:09d}\tproduct {item} by l&#39;artisan\t{named}")
    (folder / f"{stem}_items.tsv").write_text("\n".join(rows) + "\n")
    return folder / f"{stem}.txt"


GENRES = ["unknown", "Action", "Comedy", "Drama", "Romance"]


def write_movielens(folder: Path, n_users: int = 50, n_items: int = 40, seed: int = 0) -> Path:
    """An ML-100K folder (u.data, u.item, u.genre, u.user) with genres, release years and titles."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ratings = []
    for user in range(1, n_users + 1):
        for item in rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(3, 10)), replace=False):
            ratings.append(f"{user}\t{item}\t{int(rng.integers(1, 6))}\t{int(rng.integers(8e8, 9e8))}")
    (folder / "u.data").write_text("\n".join(ratings) + "\n")
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)))
    items = []
    for item in range(1, n_items + 1):
        year = 1980 + item % 20
        flags = ["0"] * len(GENRES)
        for genre in {1 + item % 4, 1 + (item * 7) % 4}:  # one or two genres
            flags[genre] = "1"
        items.append(f"{item}|Movie {item} &amp; Co ({year})|01-Jan-{year}||http://x|{'|'.join(flags)}")
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.user").write_text(
        "".join(f"{u}|{20 + u % 40}|{'MF'[u % 2]}|student|0000{u % 10}\n" for u in range(1, n_users + 1))
    )
    return folder


def shipped(name: str, tmp_path: Path, shared: Path) -> Interactions:
    """Dataset `name` (beauty or ml-100k) from the shared data folder when it is there, else from a
    small folder of the same shape written under tmp_path and loaded the same way."""
    folder = KNOWN_DATASETS[name].folder
    if (shared / folder).is_dir():
        return load_dataset(name, shared)
    writer = {"beauty": write_s3rec, "ml-100k": write_movielens}[name]
    writer(tmp_path / folder)
    return load_dataset(name, tmp_path)
