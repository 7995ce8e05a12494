"""One logical index over N shards of any backend, split by a hash of the item id.

Each item lives in exactly one shard (so an upsert replaces it in place), every query goes to all
shards in parallel threads, and their top-k lists are merged by score. Each shard applies the filter
and the history exclusion itself and returns its own best k, so the merge is exact: the sharded
result is what one index holding every item would return, up to each shard's own approximation.

A shard is anything with the Index contract, which is what lets a shard live in another process or on
another machine (a Milvus collection, or a remote client speaking the same contract).

Threads, not processes: FAISS and numpy release the GIL while they search. FAISS sizes its OpenMP team
per calling thread, so each shard thread gets cores / shards OpenMP threads (at least one); more would
oversubscribe the cores and spin.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import BaseIndex, Capabilities, SearchResult, check_k
from recindex.index.filters import Filter

MAX_SHARDS = 256


def shard_of(ids: np.ndarray, n_shards: int) -> np.ndarray:
    """splitmix64 of the id, mod n: sequential ids spread evenly and the mapping never changes."""
    z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(n_shards)).astype(np.int64)


class ShardedIndex(BaseIndex):
    backend = "sharded"

    def __init__(self, shards: list[BaseIndex], spec: str = ""):
        if not shards or len(shards) > MAX_SHARDS:
            raise InvalidRequest(f"a sharded index needs 1..{MAX_SHARDS} shards, got {len(shards)}")
        first = shards[0]
        if any(s.dim != first.dim or s.metric != first.metric for s in shards):
            raise InvalidRequest("all shards must share one dimension and metric")
        self.shards = shards
        self.spec = spec
        self.default_search_params = dict(first.default_search_params)
        super().__init__(first.dim, first.metric, first.search_params)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def capabilities(self) -> Capabilities:
        caps = [s.capabilities for s in self.shards]
        return Capabilities(
            upsert=all(c.upsert for c in caps),
            remove=all(c.remove for c in caps),
            filter="native" if all(c.filter == "native" for c in caps) else "post-filter",
            persist=all(c.persist for c in caps),
            attributes=all(c.attributes for c in caps),
        )

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        owner = shard_of(ids, len(self.shards))
        for number, shard in enumerate(self.shards):
            rows = np.flatnonzero(owner == number)
            if len(rows):
                subset = {k: [v[i] for i in rows] for k, v in attributes.items()} if attributes else None
                shard.add(ids[rows], vectors[rows], attributes=subset)

    def _remove(self, ids: np.ndarray) -> int:
        owner = shard_of(ids, len(self.shards))
        return sum(shard.remove(ids[owner == n]) for n, shard in enumerate(self.shards) if (owner == n).any())

    def search(self, queries, k: int, *, filter=None, params=None, exclude=None) -> SearchResult:  # noqa: A002
        # Exclusion is handed to every shard (each over-fetches for it), so it bypasses the base class's.
        check_k(k, len(self))
        jobs = [(shard, filter) for shard in self.shards]
        return self.fan_out(jobs, np.asarray(queries, np.float32), int(k), params, exclude)

    def fan_out(self, jobs: list[tuple[BaseIndex, object]], queries: np.ndarray, k: int, params, exclude):
        """The merged top k of (shard, its filter) pairs whose shard holds items, searched in parallel."""
        jobs = [(s, min(k, len(s)), flt) for s, flt in jobs if len(s)]
        if not jobs:  # every chosen shard is empty: nothing is eligible
            return SearchResult.empty(1 if queries.ndim == 1 else len(queries), k)
        if self._pool is None:
            workers = self.pool_workers()
            self._pool = ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix="shard",
                initializer=_limit_openmp,
                initargs=(max(1, (os.cpu_count() or 1) // workers),),
            )
        for shard in self.shards:
            shard.count_candidates = self.count_candidates
        # For one query the calling thread searches the last shard itself (one pool round trip fewer;
        # a single query runs on one OpenMP thread anyway). Batches all go to the pool, whose threads
        # have their share of OpenMP threads.
        single = queries.ndim == 1 or len(queries) == 1
        pooled, own = (jobs[:-1], jobs[-1]) if single else (jobs, None)
        futures = [
            self._pool.submit(s.search, queries, kk, filter=flt, params=params, exclude=exclude)
            for s, kk, flt in pooled
        ]
        mine = (
            []
            if own is None
            else [own[0].search(queries, own[1], filter=own[2], params=params, exclude=exclude)]
        )
        return merge([f.result() for f in futures] + mine, k)

    def pool_workers(self) -> int:
        """Threads of the search pool: one per shard."""
        return len(self.shards)

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        raise NotImplementedError  # `search` is overridden

    def _save(self, folder: Path) -> dict:
        for number, shard in enumerate(self.shards):
            shard.save(folder / f"shard_{number}")
        return {"shards": len(self.shards), "spec": self.spec}

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> ShardedIndex:
        # Shards may be of any backend: the factory's table reads them (index.factory._load_sharded).
        raise NotImplementedError("a sharded index is read by recindex.index.factory.load_index")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _limit_openmp(threads: int) -> None:
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(threads)


def merge(parts: list[SearchResult], k: int) -> SearchResult:
    """The best k of several shards' lists (each sorted best first, padded with -1 / -inf)."""
    if len(parts) == 1:
        only = parts[0]
        return SearchResult(only.ids[:, :k], only.scores[:, :k], only.scored)
    ids = np.concatenate([p.ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    take = min(k, ids.shape[1])
    # A stable sort of a few hundred scores per row is cheaper than partition + lexsort here.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    out_ids = np.full((len(ids), k), -1, np.int64)
    out_scores = np.full((len(ids), k), -np.inf, np.float32)
    out_ids[:, :take] = np.take_along_axis(ids, order, axis=1)
    out_scores[:, :take] = np.take_along_axis(scores, order, axis=1)
    out_ids[~np.isfinite(out_scores)] = -1
    scored = None
    if all(p.scored is not None for p in parts):
        scored = np.sum([p.scored for p in parts], axis=0)
    return SearchResult(out_ids, out_scores, scored)
