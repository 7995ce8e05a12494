"""Save and load `Interactions` as plain files (.npy without pickle, JSON), e.g. inside a bundle.

A dataset too large to hold whole is saved from its parts (`save_interactions_in_parts`: consecutive
users' sequences, e.g. user shards, one part in memory at a time) into the same files, byte for byte,
that saving it whole writes; `load_interactions(memory_map=True)` maps the sequences (items and
timestamps) from disk instead of reading them, so that a user's history is read when it is looked up.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from recindex.data.interactions import Interactions, ItemFeatures, UserFeatures
from recindex.errors import RecIndexError


def _ids_to_json(ids: np.ndarray) -> list:
    return [int(i) if isinstance(i, np.integer | int) else str(i) for i in ids.tolist()]


def _ids_from_json(values: list) -> np.ndarray:
    if all(isinstance(v, int) for v in values):
        return np.asarray(values, np.int64)
    return np.asarray(values, dtype=object)


def save_interactions(data: Interactions, folder: Path) -> list[Path]:
    """Write `data` under `folder`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    _save_array(folder, "offsets", data.offsets, written)
    _save_array(folder, "items", data.items, written)
    if data.timestamps is not None:
        _save_array(folder, "timestamps", data.timestamps, written)
    _save_description(data, folder, written)
    return written


def save_interactions_in_parts(
    skeleton: Interactions,
    offsets: np.ndarray,
    parts: Iterable[Interactions],
    folder: Path,
    *,
    timed: bool,
) -> list[Path]:
    """Write under `folder` the files `save_interactions` writes for the dataset whose ids and features
    are `skeleton`'s, whose users' sequences start at `offsets`, and whose sequences (and timestamps, if
    `timed`) are those of `parts`, consecutive users in order, one part in memory at a time; returns the
    files written."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(offsets) != skeleton.n_users + 1:
        raise RecIndexError(f"{len(offsets)} offsets for {skeleton.n_users} users: expected n_users + 1")
    written: list[Path] = []
    _save_array(folder, "offsets", np.asarray(offsets, np.int64), written)
    names = ["items", "timestamps"] if timed else ["items"]
    paths = [folder / f"{name}.npy" for name in names]
    total, count = int(offsets[-1]), 0
    # np.save's header (format 1.0) for the whole length, then the parts' values after it
    descr = npy_format.dtype_to_descr(np.dtype(np.int64))
    header = {"descr": descr, "fortran_order": False, "shape": (total,)}
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "wb")) for path in paths]
        for handle in handles:
            npy_format.write_array_header_1_0(handle, header)
        for part in parts:
            for handle, values in zip(handles, [part.items, part.timestamps][: len(handles)], strict=True):
                handle.write(np.ascontiguousarray(values, np.int64).data)
            count += len(part.items)
    if count != total:
        raise RecIndexError(f"the parts hold {count:,} interactions; the offsets say {total:,}")
    written += paths
    _save_description(skeleton, folder, written)
    return written


def _save_array(folder: Path, name: str, value: np.ndarray, written: list[Path]) -> None:
    path = folder / f"{name}.npy"
    np.save(path, np.ascontiguousarray(value), allow_pickle=False)
    written.append(path)


def _save_description(data: Interactions, folder: Path, written: list[Path]) -> None:
    """The ids, features and name of `data` (all but its sequences) under `folder`, added to `written`."""

    def array(name: str, value: np.ndarray) -> None:
        _save_array(folder, name, value, written)

    meta = {
        "name": data.name,
        "user_ids": _ids_to_json(data.user_ids),
        "item_ids": _ids_to_json(data.item_ids),
        "item_titles": data.extra.get("item_titles"),
    }
    if data.item_features is not None:
        array("item_feature_offsets", data.item_features.offsets)
        array("item_feature_tokens", data.item_features.tokens)
        meta["item_feature_names"] = data.item_features.names
        meta["item_numeric_fields"] = list(data.item_features.numeric)
        for index, values in enumerate(data.item_features.numeric.values()):
            array(f"item_numeric_{index}", values)  # by position: a field name may not suit a file name
    if data.user_features is not None:
        meta["user_feature_vocab"] = data.user_features.vocab
        for field, codes in data.user_features.codes.items():
            array(f"user_feature_{field}", codes)
    path = folder / "interactions.json"
    path.write_text(json.dumps(meta), encoding="utf-8")
    written.append(path)


def load_interactions(folder: Path, *, memory_map: bool = False) -> Interactions:
    """What `save_interactions` wrote under `folder`. `memory_map`: the items and timestamps are mapped
    from their files and read from disk where they are used."""
    meta = json.loads((folder / "interactions.json").read_text(encoding="utf-8"))

    def array(name: str) -> np.ndarray:
        # copy-on-write: nothing writes into a dataset's arrays, but torch warns of a read-only one
        mapped = memory_map and name in ("items", "timestamps")
        return np.load(folder / f"{name}.npy", allow_pickle=False, mmap_mode="c" if mapped else None)

    item_features = None
    if "item_feature_names" in meta:
        fields = meta.get("item_numeric_fields", [])
        numeric = {name: array(f"item_numeric_{index}") for index, name in enumerate(fields)}
        item_features = ItemFeatures(
            array("item_feature_offsets"), array("item_feature_tokens"), meta["item_feature_names"], numeric
        )
    user_features = None
    if "user_feature_vocab" in meta:
        vocab = meta["user_feature_vocab"]
        user_features = UserFeatures({f: array(f"user_feature_{f}") for f in vocab}, vocab)
    extra = {"item_titles": meta["item_titles"]} if meta.get("item_titles") else {}
    return Interactions(
        user_ids=_ids_from_json(meta["user_ids"]),
        item_ids=_ids_from_json(meta["item_ids"]),
        offsets=array("offsets"),
        items=array("items"),
        timestamps=array("timestamps") if (folder / "timestamps.npy").exists() else None,
        item_features=item_features,
        user_features=user_features,
        name=meta["name"],
        extra=extra,
    )
