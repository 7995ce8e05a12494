"""Bundle versions of a running service: stage, gate, promote (blue/green), roll back.

A staged version (bundle + its own index) waits beside the active one. Promotion first checks the
staged index against exact search over the staged bundle's own item vectors, with the check every
`recindex index build` makes (`recindex.pipelines.self_check`: the same validation users, so the figure
is the one the build printed and stored), and refuses below `min_index_recall` with the measured
figure. It then carries the item changes made since the old bundle over to the new one (re-encoded by
its tower; see `ItemWriter.switch_to`) and swaps the active reference while holding the writers' lock:
requests in flight finish on the version they started with, later ones see the new one, and no write
lands between the two. The carried changes go to a new log, and the state record
(`state_dir/active.json`, see serve.state) is switched to the new bundle and log in one atomic step, so
a restart serves the promoted bundle, and a crash mid-promotion serves the old one with its own log.
Rollback promotes the previous version again, without the gate.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from recindex.errors import RecIndexError
from recindex.index.exact_index import ExactIndex
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import item_attributes, load_bundle_index
from recindex.pipelines.self_check import CHECK_QUERIES, SelfCheck, check_queries, run_check
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.state import ServiceState
from recindex.serve.wal import WriteAheadLog


class PromotionRefused(RecIndexError):
    """The staged index is not good enough to serve, or there is nothing to promote."""


def load_version(bundle_path: str | Path, index_name: str | None) -> ServingVersion:
    """A bundle and its named index (or exact search over its item vectors) as one serving version."""
    bundle = load_bundle(bundle_path)
    attributes = item_attributes(bundle.data)  # built once: the exact index and the popularity list share it
    if index_name is not None:
        index = load_bundle_index(bundle, index_name)
    else:
        index = ExactIndex(bundle.item_embeddings.shape[1], bundle.manifest["embedding"]["metric"])
        ids = np.arange(len(bundle.item_embeddings))
        index.add(ids, bundle.item_embeddings, attributes=attributes)
    source = {"bundle": str(bundle_path), "index": index_name}
    return ServingVersion.of(bundle, index, source=source, attributes=attributes)


def gate_check(version: ServingVersion) -> SelfCheck:
    """The build's self-check, on the staged version (a staged index holds exactly the catalogue)."""
    queries = check_queries(version.bundle, CHECK_QUERIES)
    return run_check(version.index, version.bundle.item_embeddings, queries, timings=False)


class BundleRegistry:
    def __init__(
        self,
        recommender: Recommender,
        writer: ItemWriter,
        state_dir: Path,
        min_recall: float,
        *,
        promotions: bool = True,
    ):
        self.promotions = promotions  # False where several processes apply one log (see `_refuse_shared`)
        self.recommender = recommender
        self.writer = writer
        self.state = ServiceState(state_dir)
        self.min_recall = min_recall
        self.staged: dict[str, ServingVersion] = {}
        self.previous: ServingVersion | None = None
        self.history: list[dict] = []

    def stage(self, bundle_path: str, index_name: str | None) -> ServingVersion:
        self._refuse_shared()
        version = load_version(bundle_path, index_name)
        if version.bundle_id == self.recommender.active.bundle_id:
            raise PromotionRefused(f"bundle {version.bundle_id} is already being served")
        self.staged[version.bundle_id] = version
        self._log("staged", None, version.bundle_id)
        return version

    def promote(self, bundle_id: str, *, gate: bool = True) -> dict:
        self._refuse_shared()
        version = self.staged.get(bundle_id)
        if version is None:
            raise PromotionRefused(f"no staged bundle {bundle_id!r}; stage it first (POST /v1/admin/bundles)")
        check = gate_check(version) if gate else None
        recall = None if check is None else check.recall_at_k
        if check is not None and check.recall_at_k < self.min_recall:
            raise PromotionRefused(
                f"refused: the staged index finds {check.recall_at_k:.3f} of exact search's top-{check.k} "
                f"on {check.queries} {check.source}, below the required {self.min_recall:.3f}"
            )
        with self.writer.lock:
            old = self.recommender.active
            old_record = self.state.read()
            old_log = self.writer.log
            new_log = WriteAheadLog(self.state.folder / self.state.new_log_name()) if old_log else None
            carried = self.writer.switch_to(version, new_log)
            new_record = {
                "bundle_id": version.bundle_id,
                **version.source,
                "log": new_log.path.name if new_log else None,
                "snapshot": None,
            }
            self.state.write(new_record)  # the commit point: a restart now serves the new bundle
            self.recommender.active = version  # one reference: requests see the old or the new, whole
            self.previous = old
            del self.staged[bundle_id]
            self.staged[old.bundle_id] = old  # kept warm for a rollback
            if old_log is not None:
                old_log.close()
                self.state.discard(old_record or {"log": old_log.path.name}, keep=new_record)
        self._log("promoted" if gate else "rolled back", old.bundle_id, version.bundle_id)
        return {"active": version.bundle_id, "previous": old.bundle_id, "index_recall": recall, **carried}

    def rollback(self) -> dict:
        self._refuse_shared()
        if self.previous is None or self.previous.bundle_id not in self.staged:
            raise PromotionRefused("there is no previous bundle to roll back to")
        return self.promote(self.previous.bundle_id, gate=False)

    def _refuse_shared(self) -> None:
        # A promotion here switches this process only; the other workers or replicas that apply the same
        # log would go on with the old bundle, and records of two bundles would mix in one log.
        if not self.promotions:
            raise PromotionRefused(
                "bundle staging, promotion and rollback need a single-process service: this one shares "
                "its log with other workers or replicas. Stop them, run `recindex serve STATE_DIR` "
                "(one worker), stage and promote there, then start the workers again (docs/service.md)"
            )

    def describe(self) -> list[dict]:
        active = self.recommender.active
        rows = [version_row(active, "active")]
        rows += [version_row(v, "previous" if v is self.previous else "staged") for v in self.staged.values()]
        return rows

    def _log(self, action: str, before: str | None, after: str) -> None:
        self.history.append(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "action": action,
                "from": before,
                "to": after,
            }
        )


def version_row(version: ServingVersion, state: str) -> dict:
    return {
        "bundle_id": version.bundle_id,
        "state": state,
        "items": len(version.index),
        "index": version.source.get("index"),
        "bundle": version.source.get("bundle"),
    }
