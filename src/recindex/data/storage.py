"""Save and load `Interactions` as plain files (.npy without pickle, JSON), e.g. inside a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recindex.data.interactions import Interactions, ItemFeatures, UserFeatures


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

    def array(name: str, value: np.ndarray) -> None:
        path = folder / f"{name}.npy"
        np.save(path, np.ascontiguousarray(value), allow_pickle=False)
        written.append(path)

    meta = {
        "name": data.name,
        "user_ids": _ids_to_json(data.user_ids),
        "item_ids": _ids_to_json(data.item_ids),
        "item_titles": data.extra.get("item_titles"),
    }
    array("offsets", data.offsets)
    array("items", data.items)
    if data.timestamps is not None:
        array("timestamps", data.timestamps)
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
    return written


def load_interactions(folder: Path) -> Interactions:
    meta = json.loads((folder / "interactions.json").read_text(encoding="utf-8"))

    def array(name: str) -> np.ndarray:
        return np.load(folder / f"{name}.npy", allow_pickle=False)

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
