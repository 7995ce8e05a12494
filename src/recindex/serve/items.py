"""Durable item changes on the serving version: log first, then the index, visible to the next query.

An upsert gives an item by content (attribute token names, encoded by the bundle's item tower, as cold
items are) or by vector, with optional scalar attributes for filters. An index that places items by
their query view (SCI's `ci`) gets that view too, from the bundle's query tower, for items known by
content. The change is appended to the write-ahead log and fsynced before it touches the index, so an
acknowledged change survives a crash: on start the service replays the log on top of the bundle.
Writers take turns (one lock), so the log's order is the order the index saw.

The log may be shared (see serve.replication): other processes append to it too, and this writer
applies every record in the log's order, its own and theirs (`sync`, called by a follower thread and
before applying its own record), so every process's index goes through the same states.

New items get internal indices after the bundle's catalogue; `ServingVersion.raw_item_id` maps them
back. They can be retrieved, filtered and deleted; a query history cannot name them yet (the sequence
encoder only knows the catalogue it was trained on).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.attributes import AttributeStore
from recindex.pipelines import content_query_views
from recindex.serve.recommender import ServingVersion
from recindex.serve.wal import WriteAheadLog, decode_vectors, encode_vectors

OWN_RECORD_TIMEOUT_SECONDS = 30.0  # how long a write waits for the log to hand its record back
_SKIPPED = object()


class LogGap(RecIndexError):
    """The log no longer holds records this process has not applied: compaction folded them into a
    newer snapshot, which the process must load (see `LogFollower`)."""


@dataclass
class ItemChange:
    item_id: str
    features: list[str] | None = None  # attribute token names, e.g. ["genre=Comedy", "year=1995"]
    vector: list[float] | None = None
    attributes: dict = field(default_factory=dict)


class ItemWriter:
    def __init__(self, version: ServingVersion, log: WriteAheadLog | None, applied: int = 0):
        self.version = version
        self.log = log
        self.applied = applied  # the sequence number of the last log record `version` holds
        self.lock = threading.RLock()  # held by a promotion across the swap, so no write falls between
        # What changed since the bundle: kept so that a promotion can re-encode it with the new tower.
        self.added: dict[str, ItemChange] = {}
        self.deleted: set[str] = set()
        self._pending: list[dict] = []  # records read from the log but not applied (one failed)

    def upsert(self, changes: list[ItemChange]) -> int:
        """Make the items durable, then searchable; returns the log sequence number."""
        with self.lock:
            raw_ids, attributes, vectors = self._checked(changes)
            features = [c.features for c in changes]
            seq = self.log.append(
                "upsert", **_upsert_record(self.version.bundle_id, raw_ids, vectors, attributes, features)
            )
            if self._next_is(seq):  # nobody else wrote in between: apply what is at hand
                self._apply_upsert(raw_ids, vectors, attributes, features)
                self.applied = seq
            else:
                self.sync_through(seq)
            return seq

    def delete(self, raw_ids: list[str]) -> tuple[int, int]:
        """Remove items; returns (log sequence number, how many were present)."""
        with self.lock:
            seq = self.log.append("delete", bundle_id=self.version.bundle_id, item_ids=list(raw_ids))
            if self._next_is(seq):
                present = self._apply_delete(raw_ids)
                self.applied = seq
            else:
                present = self.sync_through(seq)
            return seq, present

    def replay(self, after: int = 0) -> int:
        """Apply the logged changes after sequence `after` (on start); returns how many."""
        with self.lock:
            self.applied = max(self.applied, after)
            return self.sync()

    def sync(self) -> int:
        """Apply the records the log holds beyond `applied` (appended by this process or another), in
        the log's order; returns how many changes were applied."""
        with self.lock:
            return self._apply_records(self.log.read_new())[0]

    def sync_through(self, seq: int, timeout: float = OWN_RECORD_TIMEOUT_SECONDS):
        """Apply records until record `seq` is applied, waiting for the log to deliver them; returns
        what applying `seq` returned (a delete: how many items were present)."""
        deadline = time.monotonic() + timeout
        result = None
        with self.lock:
            while self.applied < seq:
                _, out = self._apply_records(self.log.read_new(), want=seq)
                result = out if out is not _SKIPPED else result
                if self.applied >= seq:
                    break
                if time.monotonic() > deadline:
                    raise RecIndexError(
                        f"the log acknowledged record {seq} but has not delivered it back in {timeout:.0f} s "
                        f"(this process has applied up to {self.applied}); it is durable and will be applied"
                    )
                self.log.wait(0.05)
        return result

    def adopt(self, loaded: ItemWriter, applied: int) -> None:
        """Serve the state `loaded` was restored with (a newer snapshot, through record `applied`),
        keeping this writer's log and the records read from it but not applied yet."""
        with self.lock:
            self.version, self.added, self.deleted = loaded.version, loaded.added, loaded.deleted
            self.applied = applied

    def _next_is(self, seq: int) -> bool:
        return seq == self.applied + 1 and not self._pending

    def _apply_records(self, records: list[dict], want: int | None = None) -> tuple[int, object]:
        records, self._pending = self._pending + records, []
        count, result = 0, _SKIPPED
        for position, record in enumerate(records):
            try:
                out = self._apply_record(record)
            except Exception:
                self._pending = records[position:]  # tried again by the next call
                raise
            if out is _SKIPPED:
                continue
            count += record["op"] != "checkpoint"
            if record["seq"] == want:
                result = out
        return count, result

    def _apply_record(self, record: dict):
        seq, op = record["seq"], record["op"]
        if seq <= self.applied:
            return _SKIPPED  # in the snapshot already, or applied when it was written here
        if op == "checkpoint" or seq != self.applied + 1:
            raise LogGap(
                f"log record {seq} follows record {self.applied} of this process: the records between "
                f"were folded into a newer snapshot, which must be loaded"
            )
        if record.get("bundle_id") != self.version.bundle_id:
            raise RecIndexError(
                f"log record {seq} was made under bundle {record.get('bundle_id')!r}, not the served "
                f"{self.version.bundle_id!r}: serve that bundle, or use another state_dir or log"
            )
        if op == "upsert":
            features = record.get("features") or [None] * len(record["item_ids"])
            vectors = decode_vectors(record["vectors"])
            out = self._apply_upsert(record["item_ids"], vectors, record["attributes"], features)
        elif op == "delete":
            out = self._apply_delete(record["item_ids"])
        else:
            raise RecIndexError(f"log record {seq}: unknown operation {op!r}")
        self.applied = seq
        return out

    # ---- applying a change ------------------------------------------------------------------------

    def _apply_upsert(
        self, raw_ids: list[str], vectors: np.ndarray, attributes: dict, features: list
    ) -> None:
        version = self.version
        for row, raw in enumerate(raw_ids):
            own = {
                name: values[row] for name, values in (attributes or {}).items() if values[row] is not None
            }
            vector = None if features[row] is not None else vectors[row].tolist()
            self.added[raw] = ItemChange(raw, features[row], vector, own)
            self.deleted.discard(raw)
        described = [describe_change(self.added[raw]) for raw in raw_ids]
        ids = np.asarray([version.internal_id(raw, create=True) for raw in raw_ids], np.int64)
        views = self._query_views(vectors, features)
        if views is None:
            version.index.add(ids, vectors, attributes=attributes or None)
        else:
            version.index.add_with_views(ids, vectors, views, attributes=attributes or None)
        for row, internal in enumerate(ids.tolist()):
            version.changed_vectors[internal] = vectors[row].copy()
            version.changed_descriptions[internal] = described[row]
        # A new item has no interactions yet: popularity 0 keeps it last in the fallback list.
        version.popular.add(ids, np.zeros((len(ids), 1), np.float32), attributes=attributes or None)

    def _apply_delete(self, raw_ids: list[str]) -> int:
        version = self.version
        for raw in raw_ids:
            self.added.pop(raw, None)
            if raw in version.item_lookup:
                self.deleted.add(raw)
        ids = np.asarray(
            [i for i in (version.internal_id(raw) for raw in raw_ids) if i is not None], np.int64
        )
        if not len(ids):
            return 0
        version.popular.remove(ids)
        return version.index.remove(ids)

    # ---- promotion --------------------------------------------------------------------------------

    def switch_to(self, staged: ServingVersion, log: WriteAheadLog | None) -> dict:
        """Carry the changes made since the bundle over to `staged`, re-encoded by its item tower.

        Items known by content are encoded again by the new tower; items given as a vector keep it when
        the dimension still fits and are dropped (and counted) when it does not. The carried changes
        are written to `log`, a new log under the new bundle id, so a restart on the new bundle
        replays them; the old log is left as it is until the caller makes the new one current. Call
        with `self.lock` held, then make `staged` active.
        """
        scratch = ItemWriter(staged, None)
        carried = [
            c for c in self.added.values() if c.features is not None or len(c.vector) == staged.index.dim
        ]
        dropped = len(self.added) - len(carried)
        vectors = scratch._vectors(carried) if carried else np.zeros((0, staged.index.dim), np.float32)
        raw_ids = [c.item_id for c in carried]
        attributes = attribute_columns([c.attributes for c in carried])
        features = [c.features for c in carried]
        deleted = sorted(r for r in self.deleted if r in staged.item_lookup)
        records = []
        if carried:
            records.append(
                {"op": "upsert", **_upsert_record(staged.bundle_id, raw_ids, vectors, attributes, features)}
            )
        if deleted:
            records.append({"op": "delete", "bundle_id": staged.bundle_id, "item_ids": deleted})
        if log is not None:
            log.rewrite(records)
        scratch.added, scratch.deleted = {}, set()
        if carried:
            scratch._apply_upsert(raw_ids, vectors, attributes, features)
        if deleted:
            scratch._apply_delete(deleted)
        self.version, self.added, self.deleted, self.log = staged, scratch.added, scratch.deleted, log
        self.applied, self._pending = len(records) if log is not None else 0, []
        return {"carried": len(carried), "dropped": dropped, "deleted": len(deleted)}

    # ---- checks -----------------------------------------------------------------------------------

    def _vectors(self, changes: list[ItemChange]) -> np.ndarray:
        version = self.version
        dim = version.index.dim
        out = np.empty((len(changes), dim), np.float32)
        by_content = [i for i, c in enumerate(changes) if c.vector is None]
        for i, change in enumerate(changes):
            if (change.vector is None) == (change.features is None):
                raise InvalidRequest(f"item {change.item_id!r}: give exactly one of features or vector")
            if change.vector is not None:
                with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
                    vector = np.asarray(change.vector, np.float32)
                if vector.shape != (dim,) or not np.isfinite(vector).all():
                    raise InvalidRequest(f"item {change.item_id!r}: vector must be {dim} finite numbers")
                norm = float(np.linalg.norm(vector))
                if norm == 0:
                    raise InvalidRequest(f"item {change.item_id!r}: a zero vector cannot be scored")
                out[i] = vector / norm  # the towers' vectors are unit length; so are these
        if by_content:
            tokens = [self._tokens(changes[i]) for i in by_content]
            with torch.no_grad():
                out[by_content] = version.bundle.model.content_vectors(tokens).numpy()
        return out

    def _query_views(self, vectors: np.ndarray, features: list) -> np.ndarray | None:
        """Where the index places an item by its query view (SCI's consistent index), f_q(I) of each
        item known by content; an item given as a vector is placed by that vector. None elsewhere."""
        index = self.version.index
        if not index.capabilities.query_views:
            return None
        views = vectors.copy()
        by_content = [row for row, names in enumerate(features) if names is not None]
        if by_content:
            known = self.version.token_lookup
            tokens = [[known[name] for name in features[row] if name in known] for row in by_content]
            views[by_content] = content_query_views(self.version.bundle.model, tokens)
        return views

    def _tokens(self, change: ItemChange) -> list[int]:
        known = self.version.token_lookup
        tokens = [known[name] for name in change.features if name in known]
        if not tokens:
            sample = ", ".join(list(known)[:5]) or "none"
            raise InvalidRequest(
                f"item {change.item_id!r}: none of its features is known to the model "
                f"(known ones: {sample}, ...)"
            )
        return tokens

    def _checked(self, changes: list[ItemChange]) -> tuple[list[str], dict[str, list], np.ndarray]:
        """An upsert's raw ids, attribute columns and vectors, refused before anything is written when
        an id repeats or an attribute does not fit; the vectors (the costly part, encoding) come last."""
        if not changes:
            raise InvalidRequest("no items to upsert")
        raw_ids = [c.item_id for c in changes]
        if len(set(raw_ids)) != len(raw_ids):
            raise InvalidRequest("an item id repeats within one request")
        attributes = attribute_columns([c.attributes for c in changes])
        self._check_attributes(attributes, len(changes))
        return raw_ids, attributes, self._vectors(changes)

    def _check_attributes(self, attributes: dict, n: int) -> None:
        # The index validates kinds and names; trying them on a scratch store keeps a bad request
        # out of the log.
        AttributeStore().set(np.arange(n), attributes or None)


def _upsert_record(bundle_id: str, raw_ids: list[str], vectors, attributes: dict, features: list) -> dict:
    return {
        "bundle_id": bundle_id,
        "item_ids": raw_ids,
        "vectors": encode_vectors(vectors),
        "attributes": attributes,
        "features": features,  # kept so that a promotion can re-encode the items with a new tower
    }


def describe_change(change: ItemChange) -> str:
    """An added item's content features and attributes, for display."""
    named = [f"{name}={value}" for name, value in change.attributes.items()]
    return ", ".join((change.features or []) + named)[:300]


def attribute_columns(rows: list[dict]) -> dict[str, list]:
    """Per-item attribute dicts -> name -> one value per item (None where an item lacks it)."""
    names = sorted({name for row in rows for name in row})
    return {name: [row.get(name) for row in rows] for name in names}
