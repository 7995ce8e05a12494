"""The one base of the partitioned (learned) indexes: MFLI, URI and CI implement placement and routing.

A learned index divides its items into partitions by a code it learned (MFLI's leaves, URI's token-tree
leaves, CI's lists) and answers a query by routing it to a few partitions and scoring their items. What
differs between them is only how an item is placed and how a query is routed; everything else is here,
once:

- storage: the slot table, the vectors and the placement's per-slot columns (`RowStore`), upserts,
  removal, compaction and loading;
- search: eligibility (filters and removed items as one mask), routing (the subclass), the batched
  "candidates -> eligible mask -> exact rescoring -> top-k" of `candidates.rank`, and the filtered
  fallback: a row that the walked partitions leave short of k matches once a filter or removed items
  are masked is scored exactly over every eligible item, so such an answer is never short when k
  items qualify. History masking is the
  contract's (`BaseIndex.search` over-fetches and drops);
- the item-to-item path: one `search_triggers` signature, the triggers' checks and parameters here, the
  partitions to visit from the subclass (`_triggers`);
- `partitions()` for quality reports: the subclass names each live slot's buckets, here they become
  buckets by item id;
- `capabilities`: what the subclass declares (triggers, rebuild, query views), so callers never probe.

A subclass passes its per-slot `columns` to `__init__`, then implements `_place` (and `_placement` for
work that must succeed before anything is stored), `_route` (or `_rank`, when its partitions score
themselves, as MFLI's FAISS lists do), `_save_state` / `_restore`, and optionally `_triggers` and
`_slot_partitions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import (
    BaseIndex,
    Capabilities,
    Metric,
    Partitions,
    SearchResult,
    as_exclusions,
    check_k,
)
from recindex.index.filters import Filter, as_filter
from recindex.index.lean import ResolvedParams, is_plain_query
from recindex.index.learned.candidates import Lists, Scorer, exact_top_k, rank
from recindex.index.learned.kernels import all_finite, warm_up
from recindex.index.learned.store import Column, RowStore
from recindex.index.slots import SlotTable


@dataclass
class Route:
    """Where a batch of queries goes: (Q, P) partitions of `lists`, best first (-1: none). `score`
    replaces the exact inner product (e.g. scores from compressed codes); `overlapping` says an item
    can be in two of a row's partitions (multi-assignment), so copies must be dropped."""

    probes: np.ndarray
    lists: Lists
    score: Scorer | None = None
    overlapping: bool = False


class PartitionedIndex(BaseIndex):
    # Whether removed items stay in the partitions until compaction (they are then masked out at search
    # time), and whether removal compacts once half the slots are dead. Partitions that hold slots and
    # drop removed ones themselves (MFLI's FAISS lists) compact only when they are rebuilt.
    partitions_hold_removed: ClassVar[bool] = True
    compact_on_remove: ClassVar[bool] = True
    has_triggers: ClassVar[bool] = False
    can_rebuild: ClassVar[bool] = False

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        search_params: Mapping[str, Any] | None = None,
        columns: Mapping[str, Column] | None = None,
    ):
        """`columns`: the per-slot arrays the placement writes, saved beside the vectors."""
        super().__init__(dim, metric, search_params)
        self.store = RowStore(dim, columns)
        self._resolved = ResolvedParams()
        warm_up()  # the query path's compiled loops, now rather than on the first query

    @property
    def table(self) -> SlotTable:
        return self.store.table

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            upsert=True,
            remove=True,
            filter="native",
            persist=True,
            attributes=True,
            triggers=self.has_triggers,
            rebuild=self.can_rebuild,
            query_views=self.places_by_query_view,
        )

    @property
    def places_by_query_view(self) -> bool:
        """Whether new items are placed by a query-tower view given with them (`add_with_views`)."""
        return False

    def __len__(self) -> int:
        return len(self.store)

    def vectors_of(self, ids) -> np.ndarray:
        """The stored vectors of live ids."""
        return self.store.vectors_of(np.asarray(ids, np.int64))

    # ---- writes ----------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        placement = self._placement(ids, vectors)  # may refuse the batch: nothing is stored yet
        slots, new = self.store.upsert(ids, vectors, attributes)
        self._place(slots, new, vectors, placement)

    def _placement(self, ids: np.ndarray, vectors: np.ndarray) -> Any:
        """What `_place` needs, computed before the items are stored (so that a refusal changes nothing)."""
        return None

    def _place(self, slots: np.ndarray, new: np.ndarray, vectors: np.ndarray, placement: Any) -> None:
        """Put the stored items (new ones, and replaced ones where `new` is False) in their partitions."""
        raise NotImplementedError

    def _remove(self, ids: np.ndarray) -> int:
        slots = self.store.kill(ids)
        self._unplace(slots)
        if self.compact_on_remove and self.table.dead > max(1024, self.table.used // 2):
            self._compact()
        return len(slots)

    def _unplace(self, slots: np.ndarray) -> None:
        """Take removed slots out of the partitions (or out of caches built from them)."""

    def _compact(self) -> None:
        keep = self.store.compact()
        self._compacted(keep)

    def _compacted(self, keep: np.ndarray) -> None:
        """Slots were renumbered (`keep`: the old slot of each new one): drop what was built on them."""

    # ---- search ----------------------------------------------------------------------------------

    lean_path = True

    def _lean(self, queries, k, params) -> SearchResult | None:
        return self._lean_excluding(queries, k, params, None)

    def _lean_excluding(self, queries, k, params, exclude) -> SearchResult | None:
        """`BaseIndex.search` for a plain query without its conversions and checks: the same `_search`
        or `_search_excluding` (a subclass may mask exclusions its own way), so the same answer. For
        the serving hot loop; None where the general path must answer (and word any error)."""
        if not is_plain_query(queries, k, self.dim, len(self)) or self.metric == "cosine":
            return None
        resolved = self._resolved.get(self, params)
        if resolved is None or not all_finite(queries):
            return None
        try:
            exclusions = as_exclusions(exclude, len(queries))
        except (InvalidRequest, TypeError):  # the checked path explains it
            return None
        with self._guard:
            if not exclusions:
                return self._search(queries, k, None, resolved)
            return self._search_excluding(queries, k, None, resolved, exclusions)

    def eligible(self, flt: Filter | None) -> np.ndarray | None:
        """Mask over slots of the items a search may return, None when every item in the partitions is."""
        if flt is None and not (self.partitions_hold_removed and self.table.dead):
            return None
        return self.table.eligible(flt)

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        eligible = self.eligible(flt)
        result = self._rank(queries, k, params, eligible)
        if eligible is not None:
            self._fill_short_rows(queries, k, eligible, result)
        return result

    def _rank(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> SearchResult:
        """Route, then score the candidates exactly (or by the route's scorer) and keep the top k."""
        route = self._route(queries, k, params, eligible)
        slots, scores, scored = rank(
            route.probes,
            route.lists,
            k,
            route.score or self.exact_scorer(queries),
            eligible=eligible,
            overlapping=route.overlapping,
        )
        return SearchResult(self.store.ids_of(slots), scores, scored)

    def _route(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> Route:
        raise NotImplementedError

    def exact_scorer(self, queries: np.ndarray) -> Scorer:
        rows = self.store.rows
        # np.take gathers rows faster than fancy indexing does, and the gather is most of the cost
        return lambda who, slots: queries[who] @ np.take(rows, slots, axis=0).T

    def _fill_short_rows(self, queries, k: int, eligible: np.ndarray, result: SearchResult) -> None:
        """A selective filter or removed items can leave the walked partitions short of k eligible
        items: score every eligible item for those queries instead. (A route that is short on its own,
        with nothing masked, is the subclass's to fill: scoring every item would change what a learned
        index's figures measure; URI fills it from further leaves, after the beam's answers.)"""
        short = np.flatnonzero((result.ids >= 0).sum(1) < min(k, int(eligible.sum())))
        if not len(short):
            return
        pool = np.flatnonzero(eligible)
        slots, scores = exact_top_k(queries[short], self.store.rows, pool, k)
        result.ids[short], result.scores[short] = self.store.ids_of(slots), scores
        if result.scored is not None:
            result.scored[short] = len(pool)

    # ---- item to item ------------------------------------------------------------------------------

    def trigger_params(self) -> dict[str, int]:
        """The trigger path's parameters and their defaults."""
        return {}

    def search_triggers(
        self,
        trigger_ids,
        k: int,
        *,
        filter: Filter | str | dict | None = None,  # noqa: A002
        params: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Items like the trigger items, through the partitions they live in; the triggers are left out."""
        if not self.has_triggers:
            return super().search_triggers(trigger_ids, k, filter=filter, params=params)
        with self._guard:
            triggers = np.asarray(trigger_ids, np.int64).reshape(-1)
            slots = self.table.lookup(triggers)
            if not len(slots) or (slots < 0).any():
                raise InvalidRequest("every trigger must be an item of the index")
            check_k(k, len(self))
            flt = as_filter(filter)
            return self._triggers(slots, int(k), flt, self._resolved_trigger_params(params))

    def _resolved_trigger_params(self, params: Mapping[str, Any] | None) -> dict[str, int]:
        defaults = self.trigger_params()
        params = dict(params or {})
        unknown = set(params) - set(defaults)
        if unknown:
            takes = ", ".join(defaults) or "none"
            raise InvalidRequest(
                f"{self.backend} triggers: unknown parameters {sorted(unknown)} (it takes: {takes})"
            )
        for key, value in params.items():
            least = 0 if key == "seed" else 1
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
                raise InvalidRequest(f"trigger parameter {key} must be an integer >= {least}, got {value!r}")
        return {**defaults, **params}

    def _triggers(self, slots: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        raise NotImplementedError

    # ---- reports -----------------------------------------------------------------------------------

    def partitions(self) -> Partitions:
        with self._guard:  # one consistent view while a service writes
            live = self.table.live_slots()
            named = self._slot_partitions(live)
            buckets = {name: self.by_item_id(live, values) for name, values in named.items()}
            return Partitions(buckets, self._partition_details())

    def by_item_id(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Values of live `slots` laid out by item id: (largest id + 1,) int64, -1 at ids not given."""
        ids = self.table.ids[slots]
        out = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int64)
        out[ids] = values
        return out

    def _slot_partitions(self, live: np.ndarray) -> dict[str, np.ndarray]:
        """name -> the bucket of each of the `live` slots."""
        raise NotImplementedError

    def _partition_details(self) -> dict[str, Any]:
        return {}

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        self.store.save(folder)
        return self._save_state(folder)

    def _save_state(self, folder: Path) -> dict:
        """Write the placement's own files (codebooks, centroids, weights); return the manifest state."""
        raise NotImplementedError

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> PartitionedIndex:
        index = cls._restore(folder, manifest)
        index.store = RowStore.load(folder, index.dim, index.store.specs)
        index._loaded(folder)
        return index

    @classmethod
    def _restore(cls, folder: Path, manifest: dict) -> PartitionedIndex:
        """An empty index built from the manifest's state and the placement's files."""
        raise NotImplementedError

    def _loaded(self, folder: Path) -> None:
        """The stored items are back: check them against the placement, rebuild what is derived."""
