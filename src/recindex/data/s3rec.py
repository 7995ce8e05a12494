"""Loader for the S3-Rec sequence text format: one line per user, `user item item ...` in time order.

An optional `*_item2attributes.json` side file (`{"item": [attribute, ...]}`) gives item content
features, an optional `*_attribute_names.json` (`{"attribute": "name"}`) names them, and an optional
`*_items.tsv` (a header, then one row per item: `item_id` and a `title` column, or Beauty's
`idgenrec_textual_id`, the first words of each title) gives titles for display. Names and titles come
from scraped product pages with HTML entities in them (`L&#39;Oreal`): they are decoded on load.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from recindex.data.interactions import Interactions, ItemFeatures
from recindex.errors import DataFormatError

# How an item's attribute list reads. S3-Rec's Amazon preprocessing (data_process.py) writes an item's
# brand first, when it is frequent enough to be kept, then its categories; other data (Last.fm) has tags.
LAYOUTS = ("brand+category", "tag")


def load_s3rec(
    path: str | Path,
    attributes_path: str | Path | None = None,
    attribute_names_path: str | Path | None = None,
    name: str | None = None,
    items_path: str | Path | None = None,
    layout: str = "tag",
) -> Interactions:
    """Feature tokens are named `field=value` (`brand=OPI`, `category=Nail Polish`, `tag=rock`; value
    `attr:ID` where no name is known), so that they become filterable attributes (index.item_attributes).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    users: list[str] = []
    sequences_raw: list[list[str]] = []
    seen_users: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 2:
                    raise DataFormatError(path, line_no, "'user item [item ...]' (at least one item)", line)
                user = fields[0]
                if user in seen_users:
                    raise DataFormatError(
                        path,
                        line_no,
                        f"one line per user, but user {user!r} also has line {seen_users[user]}",
                        line.strip(),
                    )
                seen_users[user] = line_no
                users.append(user)
                sequences_raw.append(fields[1:])
        except UnicodeDecodeError as error:
            raise DataFormatError(path, None, f"UTF-8 text ({error})") from None
    if not users:
        raise DataFormatError(path, None, "at least one line 'user item [item ...]'", "an empty file")

    item_index: dict[str, int] = {}
    sequences = []
    for raw in sequences_raw:
        sequences.append([item_index.setdefault(item, len(item_index)) for item in raw])
    item_ids = _natural_ids(list(item_index))
    features = None
    if attributes_path is not None:
        features = _load_item_attributes(Path(attributes_path), item_index, attribute_names_path, layout)
    extra = {}
    if items_path is not None and Path(items_path).is_file():
        extra["item_titles"] = _load_titles(Path(items_path), item_index)
    return Interactions.from_sequences(
        _natural_ids(users), item_ids, sequences, item_features=features, name=name or path.stem, extra=extra
    )


def _natural_ids(ids: list[str]) -> np.ndarray:
    """Integer ids stay integers (so `--user 42` matches), anything else stays a string."""
    if all(i.isdigit() for i in ids):
        return np.asarray([int(i) for i in ids], np.int64)
    return np.asarray(ids, dtype=object)


def _load_item_attributes(
    path: Path, item_index: dict[str, int], names_path: str | Path | None, layout: str
) -> ItemFeatures:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"valid JSON ({error.msg})") from None
    if not isinstance(mapping, dict):
        raise DataFormatError(path, 1, 'a JSON object {"item_id": [attribute_id, ...]}')
    names: dict[str, str] = {}
    if names_path is not None and Path(names_path).exists():
        raw_names = json.loads(Path(names_path).read_text("utf-8"))
        names = {str(k): html.unescape(str(v)) for k, v in raw_names.items()}
    token_index: dict[str, int] = {}
    token_lists: list[list[int]] = [[] for _ in item_index]
    for item, attributes in mapping.items():
        if not isinstance(attributes, list):
            raise DataFormatError(path, None, f"a list of attribute ids for item {item!r}", repr(attributes))
        index = item_index.get(str(item))
        if index is None:
            continue  # attributes of items with no interactions are of no use here
        # Duplicates within one item's list carry no extra meaning: keep the first occurrence.
        tokens = dict.fromkeys(token_index.setdefault(str(a), len(token_index)) for a in attributes)
        token_lists[index] = list(tokens)
    fields = _fields(mapping, layout)
    token_names = [f"{fields[raw]}={names.get(raw, f'attr:{raw}')}" for raw in token_index]
    return ItemFeatures.from_lists(token_lists, token_names)


def _fields(mapping: dict[str, list], layout: str) -> dict[str, str]:
    """Each raw attribute's field. In the brand+category layout a brand only ever comes first in a list
    and a category comes after a brand somewhere (top-level categories lead the lists of items whose
    brand was dropped), so an attribute never seen after the first place is a brand."""
    raws = {str(a) for attributes in mapping.values() for a in attributes}
    if layout == "tag":
        return dict.fromkeys(raws, "tag")
    later = {str(a) for attributes in mapping.values() for a in list(dict.fromkeys(attributes))[1:]}
    return {raw: "category" if raw in later else "brand" for raw in raws}


TITLE_COLUMNS = ("title", "idgenrec_textual_id")  # the first one present names the items


def _load_titles(path: Path, item_index: dict[str, int]) -> list[str]:
    """One title per item ("" where the table has none), HTML entities decoded."""
    titles = [""] * len(item_index)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = reader.fieldnames or []
        column = next((c for c in TITLE_COLUMNS if c in columns), None)
        if "item_id" not in columns or column is None:
            raise DataFormatError(
                path, 1, f"a header with 'item_id' and one of {', '.join(TITLE_COLUMNS)}", "\t".join(columns)
            )
        try:
            for row in reader:
                index = item_index.get((row["item_id"] or "").strip())
                if index is not None:
                    titles[index] = html.unescape(row[column] or "").strip()
        except UnicodeDecodeError as error:
            raise DataFormatError(path, None, f"UTF-8 text ({error})") from None
    return titles
