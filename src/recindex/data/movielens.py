"""Loader for the raw GroupLens MovieLens-100K folder (`u.data`, `u.item`, `u.genre`, `u.user`).

Every rating is kept as one interaction (the rating value itself is not a signal here: retrieval asks
"what will this user watch next", not "how much will they like it"). Items get genre and release-year
tokens as content features, users get age bucket, gender and occupation, so that the cold-start and
feature-aware models have something real to work with. `u.item` is Latin-1, not UTF-8; HTML entities in
titles (`&amp;`) are decoded.

Users and items are indexed in increasing raw-id order, so internal item i is the i-th rated movie.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from recindex.data.interactions import Interactions, ItemFeatures, UserFeatures
from recindex.errors import DataFormatError, RecIndexError

AGE_BUCKETS = ["unknown", "<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
# Lower bounds of the buckets above (after "unknown"): the usual MovieLens age groups.
_AGE_LOWER = np.array([0, 18, 25, 35, 45, 50, 56])
_RELEASE_DATE = re.compile(r"^\d{1,2}-[A-Za-z]{3}-(\d{4})$")


def load_movielens_100k(folder: Path) -> Interactions:
    """Load an ML-100K folder. `u.data` is required; `u.item`/`u.genre` and `u.user` add features."""
    folder = Path(folder)
    data_path = folder / "u.data"
    if not data_path.is_file():
        raise RecIndexError(f"{folder}: not a MovieLens-100K folder (no u.data file)")
    users, items, stamps, data_lines = _read_ratings(data_path)

    user_ids, user_codes = np.unique(users, return_inverse=True)
    item_ids, item_codes = np.unique(items, return_inverse=True)
    # lexsort is stable: ratings with equal timestamps keep their order in u.data.
    order = np.lexsort((stamps, user_codes))
    counts = np.bincount(user_codes, minlength=len(user_ids))
    sequences = np.split(item_codes[order], np.cumsum(counts)[:-1])
    times = np.split(stamps[order], np.cumsum(counts)[:-1])

    item_features = None
    extra: dict = {}
    item_path = folder / "u.item"
    if item_path.is_file():
        genres = _read_genres(folder / "u.genre")
        titles, token_lists, names = _read_items(item_path, genres, item_ids, items, data_lines, data_path)
        item_features = ItemFeatures.from_lists(token_lists, names)
        extra["item_titles"] = titles
    user_path = folder / "u.user"
    user_features = _read_users(user_path, user_ids) if user_path.is_file() else None

    return Interactions.from_sequences(
        user_ids.astype(np.int64),
        item_ids.astype(np.int64),
        sequences,
        times,
        item_features=item_features,
        user_features=user_features,
        name="ml-100k",
        extra=extra,
    )


def _lines(path: Path, encoding: str):
    """(line number, stripped line) for each non-blank line; undecodable text is a format error."""
    try:
        with open(path, encoding=encoding, newline="") as handle:
            for line_no, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line_no, line
    except UnicodeDecodeError as error:
        raise DataFormatError(path, None, f"{encoding} text ({error})") from None


def _read_ratings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    expected = "4 tab-separated integers 'user item rating timestamp'"
    rows: list[tuple[int, int, int]] = []
    line_numbers: list[int] = []
    for line_no, line in _lines(path, "utf-8"):
        fields = line.split()  # tabs in the original; any whitespace is accepted
        if len(fields) != 4:
            raise DataFormatError(path, line_no, expected, line)
        try:
            user, item, _rating, stamp = (int(f) for f in fields)
        except ValueError:
            raise DataFormatError(path, line_no, expected, line) from None
        rows.append((user, item, stamp))
        line_numbers.append(line_no)
    if not rows:
        raise DataFormatError(path, None, "at least one rating line 'user item rating timestamp'", "no lines")
    table = np.asarray(rows, np.int64)
    return table[:, 0], table[:, 1], table[:, 2], np.asarray(line_numbers, np.int64)


def _read_genres(path: Path) -> list[str]:
    """Genre names in flag order; u.item's flags are meaningless without them."""
    if not path.is_file():
        raise RecIndexError(f"{path.parent}: u.item is present but u.genre (the genre names) is missing")
    by_index: dict[int, str] = {}
    for line_no, line in _lines(path, "latin-1"):
        name, sep, index = line.rpartition("|")
        if not sep or not name or not index.strip().isdigit():
            raise DataFormatError(path, line_no, "'name|index'", line)
        if int(index) in by_index:
            raise DataFormatError(path, line_no, f"a new index, but {index} is already used", line)
        by_index[int(index)] = name
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise DataFormatError(path, None, "genre indices 0, 1, 2, ... without gaps", str(sorted(by_index)))
    return [by_index[i] for i in range(len(by_index))]


def _read_items(
    path: Path,
    genres: list[str],
    item_ids: np.ndarray,
    rated_items: np.ndarray,
    data_lines: np.ndarray,
    data_path: Path,
) -> tuple[list[str], list[list[int]], list[str]]:
    """Titles and genre/year tokens of the rated items (items nobody rated are dropped)."""
    n_fields = 5 + len(genres)
    expected = (
        f"{n_fields} '|'-separated fields 'id|title|release date|video release date|URL|"
        f"{len(genres)} genre flags'"
    )
    wanted = {int(i): k for k, i in enumerate(item_ids)}
    titles: list[str | None] = [None] * len(item_ids)
    raw_tokens: list[list[str]] = [[] for _ in item_ids]
    seen: dict[int, int] = {}
    for line_no, line in _lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != n_fields or not fields[0].strip().isdigit():
            raise DataFormatError(path, line_no, expected, line)
        item = int(fields[0])
        if item in seen:
            raise DataFormatError(
                path, line_no, f"one line per item, but item {item} is also on line {seen[item]}", line
            )
        seen[item] = line_no
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise DataFormatError(path, line_no, "genre flags of 0 or 1", "|".join(flags))
        date = fields[2].strip()
        match = _RELEASE_DATE.match(date)
        if date and match is None:
            raise DataFormatError(path, line_no, "a release date like '01-Jan-1995' or nothing", date)
        index = wanted.get(item)
        if index is None:
            continue
        titles[index] = html.unescape(fields[1])
        raw_tokens[index] = [f"genre={genres[g]}" for g, flag in enumerate(flags) if flag == "1"]
        if match is not None:
            raw_tokens[index].append(f"year={match.group(1)}")
    missing = [k for k, title in enumerate(titles) if title is None]
    if missing:
        item = int(item_ids[missing[0]])
        line = int(data_lines[np.flatnonzero(rated_items == item)[0]])
        raise DataFormatError(
            path, None, f"a line for item {item}, which is rated in {data_path} line {line}", "no such line"
        )
    # Token vocabulary: every genre in u.genre order, then the years in increasing order.
    years = sorted({t for tokens in raw_tokens for t in tokens if t.startswith("year=")})
    names = [f"genre={g}" for g in genres] + years
    token_index = {name: k for k, name in enumerate(names)}
    token_lists = [[token_index[t] for t in tokens] for tokens in raw_tokens]
    return [str(t) for t in titles], token_lists, names


def _read_users(path: Path, user_ids: np.ndarray) -> UserFeatures:
    """Age bucket, gender and occupation per user; users missing from u.user get code 0 (unknown)."""
    expected = "5 '|'-separated fields 'id|age|gender|occupation|zip'"
    wanted = {int(u): k for k, u in enumerate(user_ids)}
    ages = np.zeros(len(user_ids), np.int64)
    raw: dict[str, list[str]] = {"gender": [""] * len(user_ids), "occupation": [""] * len(user_ids)}
    seen: dict[int, int] = {}
    for line_no, line in _lines(path, "latin-1"):
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 5 or not fields[0].isdigit():
            raise DataFormatError(path, line_no, expected, line)
        if fields[1] and not fields[1].isdigit():
            raise DataFormatError(path, line_no, "an age in whole years (or nothing)", fields[1])
        user = int(fields[0])
        if user in seen:
            raise DataFormatError(
                path, line_no, f"one line per user, but user {user} is also on line {seen[user]}", line
            )
        seen[user] = line_no
        index = wanted.get(user)
        if index is None:
            continue
        if fields[1]:
            ages[index] = int(np.searchsorted(_AGE_LOWER, int(fields[1]), side="right"))
        raw["gender"][index] = fields[2]
        raw["occupation"][index] = fields[3]
    codes = {"age": ages}
    vocab = {"age": list(AGE_BUCKETS)}
    for field_name, values in raw.items():
        # Sorted vocabulary so that codes do not depend on line order; "" is the unknown code 0.
        distinct = sorted(set(values) - {""})
        lookup = {value: k + 1 for k, value in enumerate(distinct)}
        codes[field_name] = np.asarray([lookup.get(v, 0) for v in values], np.int64)
        vocab[field_name] = ["unknown", *distinct]
    return UserFeatures(codes=codes, vocab=vocab)
