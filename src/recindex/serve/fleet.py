"""Replicas over one Milvus server or cluster: N independent service processes that share nothing but
Milvus and a bundle store directory (settings `fleet = NAME`; docs/scale.md, "Replicas over Milvus").

    RECINDEX_FLEET=shop recindex serve runs/b1 --index milvus --port 8001    # as many as needed

- Items: every replica takes PUT/DELETE /v1/items. A write goes to the fleet's item table (the
  per-item record: features, vector, attributes, popularity, deleted) and then to the live version's
  collection (serve.fleet_items); every replica's searches read that collection at `fleet_consistency`
  (Strong by default: the next query of any replica finds an acknowledged write).
- Versions: each bundle version has its own collection; the Milvus alias NAME names the live one, and
  the versions table says which bundle (and index) each collection belongs to (index.milvus.aliases).
  A promotion (POST .../promote on any replica) records the staged version, carries the fleet's items
  into its collection, moves the alias, and carries what was written meanwhile. Every replica polls the
  alias (every `fleet_poll_ms`) and, when it moved, loads the bundle the versions table names, checks
  the collection's version tag against it, and swaps the whole version at once.
- Answers: a replica searches the collection of the version it answers with, never the alias, so one
  answer never pairs one bundle's encoder with another's collection; responses name the collection.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI

from recindex.errors import RecIndexError
from recindex.index.milvus.aliases import FleetVersions
from recindex.index.milvus.item_table import ItemTable, now_ms
from recindex.serve.app import create_app
from recindex.serve.fleet_items import FleetWriter, absorb
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.registry import PromotionRefused, gate_check, load_version, version_row
from recindex.serve.settings import ServiceSettings

CARRY_MARGIN_MS = 5_000  # records stamped this long before a carry began are read again after the switch
SYNC_MARGIN_MS = 10_000  # a replica re-reads records this far back (other writers' clocks, late rows)
ERROR_BACKOFF_SECONDS = 1.0
logger = logging.getLogger("recindex.fleet")


def collection_of(version: ServingVersion) -> str:
    collection = getattr(version.index, "collection", None)
    if collection is None or getattr(version.index, "lite", True):
        raise RecIndexError(
            f"bundle {version.bundle_id}: a fleet serves a Milvus index on a server (milvus:... with a "
            f"uri=http://host:port); this bundle's index is {version.source.get('index') or 'exact'}"
        )
    return collection


class Fleet:
    """The Milvus side of one replica: alias and versions, item table, and the versions it holds."""

    def __init__(self, settings: ServiceSettings, first: ServingVersion):
        collection_of(first)
        connection = first.index.connection
        self.settings = settings
        self.versions = FleetVersions(connection, settings.fleet)
        self.items = ItemTable(connection, settings.fleet)
        self.recommender = Recommender(first)
        self.writer = FleetWriter(first, self)
        self.registry: FleetRegistry | None = None
        self.seen: dict[str, int] = {}  # raw id -> time stamp of the record the active version holds
        self.mark = -1  # the latest record stamp seen

    # ---- the alias ---------------------------------------------------------------------------------

    def live(self) -> str | None:
        return self.versions.live()

    def start(self) -> None:
        """Join the fleet: claim the alias for the configured version if none exists, else serve the
        version it names; then take in the fleet's item records."""
        version = self.writer.version
        record_version(self.versions, version)
        live = self.versions.claim(collection_of(version))
        with self.writer.lock:
            if live != collection_of(version):
                self.follow(live)
            else:
                self.adopt(self.prepare(version), self.items.everything())

    def follow(self, collection: str) -> None:
        """Serve the version whose collection is `collection` (the alias moved). Call with the writer's
        lock held; a version held warm (staged, or the previous one) is reused, else its bundle loads."""
        held = [v for v in self._held() if v.index.collection == collection]
        version = held[0] if held else self.load(collection)
        self.adopt(version, self.items.everything())

    def load(self, collection: str) -> ServingVersion:
        """The version the versions table names for `collection`, its version tag checked."""
        record = self.versions.version_of(collection)
        version = load_version(record["bundle"], record["index"])
        check_tag(version, collection, record)
        return self.prepare(version)

    def prepare(self, version: ServingVersion) -> ServingVersion:
        """`version` as a fleet serves it: reads at the fleet's consistency, unknown ids named from the
        item table."""
        collection_of(version)
        version.index.read_level = self.settings.fleet_consistency
        return replace(version, resolve_names=self.items.names)

    def adopt(self, version: ServingVersion, records, *, absorbed: bool = False) -> None:
        """Make `version` (holding `records`; `absorbed`: already applied to it) the one this replica
        answers and writes with."""
        if not absorbed:
            absorb(version, records)
        old = self.writer.version
        self.writer.version = version
        self.recommender.active = version  # one reference: a request sees the old or the new, whole
        self.seen = {r.raw_id: r.changed_ms for r in records}
        self.mark = max([self.mark, *self.seen.values()])
        # Starting on the live version adopts it again, read at the fleet's level: that is the same
        # version, not a switch (the registry would list it twice, once as the one to roll back to).
        same = getattr(old.index, "collection", None) == getattr(version.index, "collection", None)
        if self.registry is not None and not same:
            self.registry.switched(old, version)

    def _held(self) -> list[ServingVersion]:
        return [] if self.registry is None else list(self.registry.staged.values())

    # ---- following the others ------------------------------------------------------------------------

    def poll(self) -> None:
        """One look at the alias and at records written since the last look."""
        live = self.live()
        if live is not None and live != self.writer.version.index.collection:
            with self.writer.lock:  # a promotion of this replica's own may have been under way: read again
                live = self.live()
                if live is not None and live != self.writer.version.index.collection:
                    self.follow(live)
            return
        records = self.items.changed_since(self.mark - SYNC_MARGIN_MS)
        fresh = [r for r in records if self.seen.get(r.raw_id, -2) < r.changed_ms]
        if fresh:
            with self.writer.lock:
                absorb(self.writer.version, fresh)
                for record in fresh:
                    self.seen[record.raw_id] = record.changed_ms
                self.mark = max(self.mark, *(r.changed_ms for r in fresh))

    def close(self) -> None:
        self.versions.close()
        self.items.close()


def record_version(versions: FleetVersions, version: ServingVersion) -> None:
    bundle = str(Path(version.source["bundle"]).resolve())
    versions.record(
        collection_of(version), bundle_id=version.bundle_id, bundle=bundle, index=version.source["index"]
    )


def check_tag(version: ServingVersion, collection: str, record: dict) -> None:
    """Refuse to serve a collection with an encoder of another bundle."""
    if version.bundle_id != record["bundle_id"] or collection_of(version) != collection:
        raise RecIndexError(
            f"the fleet's collection {collection!r} holds items of bundle {record['bundle_id']!r}, but "
            f"{record['bundle']} (index {record['index']!r}) is bundle {version.bundle_id!r} over "
            f"collection {collection_of(version)!r}: not serving a mixed version"
        )


class FleetRegistry:
    """Stage, promote and roll back for the whole fleet (the interface of serve.registry's)."""

    promotions = True

    def __init__(self, fleet: Fleet, min_recall: float):
        self.fleet = fleet
        self.recommender = fleet.recommender
        self.writer = fleet.writer
        self.min_recall = min_recall
        self.staged: dict[str, ServingVersion] = {}
        self.previous: ServingVersion | None = None
        self.history: list[dict] = []
        fleet.registry = self

    def stage(self, bundle_path: str, index_name: str | None) -> ServingVersion:
        version = self.fleet.prepare(load_version(bundle_path, index_name))
        if version.bundle_id == self.recommender.active.bundle_id:
            raise PromotionRefused(f"bundle {version.bundle_id} is already being served")
        self.staged[version.bundle_id] = version
        self._log("staged", None, version.bundle_id)
        return version

    def promote(self, bundle_id: str, *, gate: bool = True) -> dict:
        version = self.staged.get(bundle_id)
        if version is None:
            raise PromotionRefused(f"no staged bundle {bundle_id!r}; stage it first (POST /v1/admin/bundles)")
        check = gate_check(version) if gate else None
        if check is not None and check.recall_at_k < self.min_recall:
            raise PromotionRefused(
                f"refused: the staged index finds {check.recall_at_k:.3f} of exact search's top-{check.k} "
                f"on {check.queries} {check.source}, below the required {self.min_recall:.3f}"
            )
        fleet = self.fleet
        with self.writer.lock:
            old = self.recommender.active
            record_version(fleet.versions, version)  # before the alias can name its collection
            started = now_ms()
            records = fleet.items.everything()
            carried = absorb(version, records, write_index=True)
            fleet.versions.point(collection_of(version))  # the fleet's switch
            # Writes acknowledged by replicas that had not seen the switch yet, and not in the carry:
            late = fleet.items.changed_since(started - CARRY_MARGIN_MS, "Strong")
            absorb(version, late, write_index=True)
            latest = {r.raw_id: r for r in records} | {r.raw_id: r for r in late}
            fleet.adopt(version, list(latest.values()), absorbed=True)
        self._log("promoted" if gate else "rolled back", old.bundle_id, version.bundle_id)
        recall = None if check is None else check.recall_at_k
        return {
            "active": version.bundle_id,
            "previous": old.bundle_id,
            "collection": collection_of(version),
            "index_recall": recall,
            **carried,
        }

    def switched(self, old: ServingVersion, new: ServingVersion) -> None:
        """The replica now serves `new` (its own promotion, or the alias moved): keep `old` warm."""
        self.staged.pop(new.bundle_id, None)
        self.staged[old.bundle_id] = old
        self.previous = old
        if new.bundle_id not in {h["to"] for h in self.history[-1:]}:
            self._log("followed", old.bundle_id, new.bundle_id)

    def rollback(self) -> dict:
        if self.previous is None or self.previous.bundle_id not in self.staged:
            raise PromotionRefused("there is no previous bundle to roll back to")
        return self.promote(self.previous.bundle_id, gate=False)

    def describe(self) -> list[dict]:
        rows = [version_row(self.recommender.active, "active")]
        rows += [version_row(v, "previous" if v is self.previous else "staged") for v in self.staged.values()]
        return rows

    def _log(self, action: str, before: str | None, after: str) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.history.append({"at": at, "action": action, "from": before, "to": after})


class FleetFollower:
    """Polls the alias and the item table from a background thread (`Fleet.poll`)."""

    def __init__(self, fleet: Fleet, every_s: float):
        self.fleet, self.every_s = fleet, every_s
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recindex-fleet-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.fleet.poll()
                self.error = None
            except Exception as error:  # keep answering from the version held; try again
                message = f"{type(error).__name__}: {error}"
                if message != self.error:
                    logger.error("cannot follow the fleet: %s", message)
                self.error = message
                self._stop.wait(ERROR_BACKOFF_SECONDS)


def build_fleet_app(settings: ServiceSettings) -> FastAPI:
    """The app of one fleet replica (see the module notes)."""
    if settings.bundle is None or settings.index is None:
        raise RecIndexError("a fleet replica needs a bundle and its Milvus index (BUNDLE --index NAME)")
    fleet = Fleet(settings, load_version(settings.bundle, settings.index))
    registry = FleetRegistry(fleet, settings.min_index_recall)
    fleet.start()
    follower = FleetFollower(fleet, settings.fleet_poll_ms / 1000)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        follower.start()
        try:
            yield
        finally:
            follower.stop()
            fleet.close()

    app = create_app(settings, fleet.recommender, fleet.writer, registry, lifespan=lifespan)
    app.state.fleet, app.state.follower = fleet, follower

    @app.get("/v1/fleet", include_in_schema=False)
    async def fleet_status() -> dict:
        """Which version this replica serves, what the alias names, and the follower's error if any."""
        version = fleet.recommender.active
        return {
            "fleet": fleet.versions.alias,
            "bundle_id": version.bundle_id,
            "collection": collection_of(version),
            "consistency": settings.fleet_consistency,
            "error": follower.error,
        }

    return app
