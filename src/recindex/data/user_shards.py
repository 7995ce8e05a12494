"""A Parquet file or folder partitioned on disk into shards of whole users, in one streaming pass, so that
a consumer reads one shard at a time instead of holding every interaction.

`partition` reads the files once through `parquet_dir.CodeStream`, which numbers users and items in
order of first appearance (the id maps, exactly as `load_parquet_dir` numbers them) and keeps each
entity's first feature value. Each batch's rows go to the file of their shard in a scratch folder, as
raw arrays (user and item as int32, the timestamp as int64: 16 bytes per interaction on disk). Shard s
holds the users numbered s * shard_users ... (s + 1) * shard_users - 1: a contiguous range of the dense
user numbers, so the shards in order are the users in order, which lets the fingerprint of the whole
dataset be hashed shard by shard (`fingerprint`). The range is of first-appearance numbers, not of raw
ids: shards fill as users arrive, so the pass needs no count of users up front.

What stays in memory during the pass: the id maps (a Python dictionary entry per distinct id), one
batch of rows, the first feature values, and a count per user and per item. `read(s)` then gives shard
s as an `Interactions` over its own users (their raw ids, the global item ids): each user's sequence
time-ordered, ties in row order, as `load_parquet_dir` orders it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recindex.data.interactions import Interactions, ItemFeatures, UserFeatures, fingerprint_of
from recindex.data.parquet_dir import CodeStream
from recindex.data.parquet_source import BATCH_ROWS, parquet_files
from recindex.data.tabular import NUMERIC_BUCKETS
from recindex.errors import RecIndexError

# A shard's users' examples (max_len + 1 int64 per user, twice) and sequences are what a trainer holds
# at a time: at the default window of 50, 65,536 users are about 54 MB of examples.
SHARD_USERS = 65_536


@dataclass
class UserShards:
    """The id maps, features and counts of a dataset, and its interactions in shard files on disk."""

    folder: Path
    shard_users: int
    n_shards: int
    skeleton: Interactions  # the id maps and features, with no interactions (every sequence empty)
    user_lengths: np.ndarray  # (n_users,) int64 interactions per user
    item_counts: np.ndarray  # (n_items,) int64 interactions per item
    has_time: bool
    owns_folder: bool = False  # the folder was made for these shards: `close` removes it
    _closed: bool = field(default=False, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_lengths)

    @property
    def n_items(self) -> int:
        return len(self.item_counts)

    @property
    def n_interactions(self) -> int:
        return int(self.user_lengths.sum())

    @property
    def name(self) -> str:
        return self.skeleton.name

    def users_of(self, shard: int) -> range:
        """The dense user numbers shard `shard` holds."""
        self._check(shard)
        return range(shard * self.shard_users, min((shard + 1) * self.shard_users, self.n_users))

    def read(self, shard: int) -> Interactions:
        """Shard `shard`'s users (index 0 is user `users_of(shard).start`) with their sequences."""
        users = self.users_of(shard)
        codes = _read(self.folder, shard, "users", np.int32)
        items = _read(self.folder, shard, "items", np.int32)
        local = codes.astype(np.int64) - users.start
        if self.has_time:
            stamps = _read(self.folder, shard, "stamps", np.int64)
            order = np.lexsort((stamps, local))
            stamps = stamps[order]
        else:
            order, stamps = np.argsort(local, kind="stable"), None
        counts = np.bincount(local, minlength=len(users))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Interactions(
            user_ids=self.skeleton.user_ids[users.start : users.stop],
            item_ids=self.skeleton.item_ids,
            offsets=offsets,
            items=items[order].astype(np.int64),
            timestamps=stamps,
            item_features=self.skeleton.item_features,
            user_features=_user_slice(self.skeleton.user_features, users),
            name=f"{self.name}[shard {shard}]",
        )

    def parts(self) -> Iterator[Interactions]:
        """Every shard in order, read when it is reached (one in memory at a time)."""
        return (self.read(shard) for shard in range(self.n_shards))

    def interactions(self) -> Interactions:
        """Every shard joined: the dataset whole in memory, as `load_parquet_dir` gives it."""
        parts = [self.read(shard) for shard in range(self.n_shards)]
        return Interactions(
            user_ids=self.skeleton.user_ids,
            item_ids=self.skeleton.item_ids,
            offsets=self.offsets(),
            items=np.concatenate([part.items for part in parts]),
            timestamps=np.concatenate([part.timestamps for part in parts]) if self.has_time else None,
            item_features=self.skeleton.item_features,
            user_features=self.skeleton.user_features,
            name=self.name,
        )

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.user_lengths)]).astype(np.int64)

    def fingerprint(self) -> str:
        """`Interactions.fingerprint` of the whole dataset, hashed one shard in memory at a time."""
        items = (self.read(shard).items for shard in range(self.n_shards))
        stamps = (self.read(shard).timestamps for shard in range(self.n_shards)) if self.has_time else None
        return fingerprint_of(self.skeleton, self.offsets(), items, stamps)

    def close(self) -> None:
        if self.owns_folder and not self._closed:
            shutil.rmtree(self.folder, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> UserShards:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _check(self, shard: int) -> None:
        if not 0 <= shard < self.n_shards:
            raise RecIndexError(f"shard {shard} does not exist: the data has shards 0 to {self.n_shards - 1}")


def is_parquet_folder(path: Path) -> bool:
    """Whether `path` is a folder the registry reads as Parquet files (not a MovieLens folder)."""
    return path.is_dir() and not (path / "u.data").exists() and bool(parquet_files(path))


def partition(
    path: Path,
    shard_users: int = SHARD_USERS,
    numeric_buckets: int = NUMERIC_BUCKETS,
    *,
    folder: Path | None = None,
    batch_rows: int = BATCH_ROWS,
) -> UserShards:
    """Read the Parquet file or folder `path` once into shards of `shard_users` users in `folder` (an
    empty or new folder; None: a new temporary one, removed by `UserShards.close`)."""
    if not isinstance(shard_users, int) or isinstance(shard_users, bool) or shard_users < 1:
        raise RecIndexError(f"users per shard must be a whole number >= 1, got {shard_users!r}")
    stream = CodeStream(Path(path), numeric_buckets, batch_rows)
    owns = folder is None
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="recindex-shards-"))
    else:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.iterdir()):
            raise RecIndexError(f"{folder}: the shard folder must be empty or new; it holds files")
    try:
        user_counts, item_counts = _Counts(), _Counts()
        n_shards = 0
        for user, item, stamp in stream.batches():
            user_counts.add(user)
            item_counts.add(item)
            n_shards = max(n_shards, _append(folder, user, item, stamp, shard_users))
    except BaseException:
        if owns:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    skeleton = _skeleton(stream)
    return UserShards(
        folder,
        shard_users,
        n_shards,
        skeleton,
        user_counts.array(len(stream.users)),
        item_counts.array(len(stream.items)),
        stream.has_time,
        owns,
    )


def _append(folder: Path, user: np.ndarray, item: np.ndarray, stamp, shard_users: int) -> int:
    """Append a batch's rows to their shards' files (in row order within each); the shards seen + 1."""
    if user.max() >= np.iinfo(np.int32).max or item.max() >= np.iinfo(np.int32).max:
        raise RecIndexError(f"more than {np.iinfo(np.int32).max:,} users or items: more than shards number")
    shard = user // shard_users
    order = np.argsort(shard, kind="stable")
    present, starts = np.unique(shard[order], return_index=True)
    bounds = [*starts.tolist(), len(order)]
    columns = [("users", user.astype(np.int32)), ("items", item.astype(np.int32))]
    if stamp is not None:
        columns.append(("stamps", stamp.astype(np.int64)))
    for index, number in enumerate(present.tolist()):
        rows = order[bounds[index] : bounds[index + 1]]
        for what, values in columns:
            with open(_file(folder, number, what), "ab") as handle:
                values[rows].tofile(handle)
    return int(present[-1]) + 1


def _file(folder: Path, shard: int, what: str) -> Path:
    return folder / f"shard-{shard:06d}.{what}"


def _read(folder: Path, shard: int, what: str, dtype) -> np.ndarray:
    path = _file(folder, shard, what)
    return np.fromfile(path, dtype=dtype) if path.exists() else np.zeros(0, dtype)


class _Counts:
    """Occurrences per dense code, the array grown as new codes appear."""

    def __init__(self) -> None:
        self.counts = np.zeros(1024, np.int64)

    def add(self, codes: np.ndarray) -> None:
        top = int(codes.max()) + 1
        if top > len(self.counts):
            grown = np.zeros(max(top, 2 * len(self.counts)), np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        self.counts[:top] += np.bincount(codes, minlength=top)

    def array(self, n: int) -> np.ndarray:
        return self.counts[:n].copy()


def _user_slice(features: UserFeatures | None, users: range) -> UserFeatures | None:
    if features is None:
        return None
    codes = {key: values[users.start : users.stop] for key, values in features.codes.items()}
    return UserFeatures(codes, features.vocab)


def _skeleton(stream: CodeStream) -> Interactions:
    user_ids = stream.users.ids()
    item_features: ItemFeatures | None = stream.item_features()
    user_features: UserFeatures | None = stream.user_features()
    return Interactions(
        user_ids=user_ids,
        item_ids=stream.items.ids(),
        offsets=np.zeros(len(user_ids) + 1, np.int64),
        items=np.zeros(0, np.int64),
        item_features=item_features,
        user_features=user_features,
        name=stream.name,
    )
