"""4-bit fast-scan codes kept in step with a partitioned index's placement, for a compressed scan.

A partitioned index that records each slot's partitions in a store column (CI's `lists`) can hold
its partitions a second time as 4-bit PQ codes (`fast_scan.FastScanLists`): a search then scans the
probed partitions' codes in FAISS's fast-scan kernel and rescores only the best `depth` estimates with
the float32 vectors (`candidates.rescore_top_k`). This class follows the placement: every placed slot
is coded into its partitions (a moved one leaves its old ones first), and after a compaction or a
load the codes are rebuilt from the rows and the column with the same quantizer, so the codes of an
item never depend on when it arrived. Removed slots stay coded until a compaction, as they stay in the
index's own lists: searches mask them (the eligible mask becomes the scan's selector).

Files: `pq4_centroids.npy` and `pq4_references.npy` (the quantizer, `FastScanLists.state`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.learned.candidates import rescore_full_shortlist, rescore_top_k
from recindex.index.learned.fast_scan import CODE_DIMS, FastScanLists, subquantizers
from recindex.index.learned.kernels import codes_probed

FILES = {"centroids": "pq4_centroids.npy", "references": "pq4_references.npy"}


COMPRESS = ("none", "pq4")  # the `compress` values of a partitioned index's spec


def check_code_dims(code_dims: int, dim: int) -> None:
    """Refuse a code size that does not divide `dim` (InvalidRequest, the index options' error)."""
    try:
        subquantizers(dim, code_dims)
    except ValueError as error:
        raise InvalidRequest(str(error)) from None


def check_compression(compress: str, code_dims: int, dim: int) -> None:
    """Refuse a `compress` / `code_dims` pair a partitioned index cannot hold (InvalidRequest)."""
    if compress not in COMPRESS:
        raise InvalidRequest(f"compress must be one of {', '.join(COMPRESS)}, got {compress!r}")
    check_code_dims(code_dims, dim)


class CompressedPartitions:
    def __init__(
        self,
        dim: int,
        partitions: int,
        state: dict[str, np.ndarray] | None = None,
        code_dims: int = CODE_DIMS,
    ):
        self.dim, self.partitions, self.code_dims = dim, partitions, code_dims
        self.lists = FastScanLists(dim, partitions, code_dims)
        if state is not None:
            self.lists.restore(state)

    def placed(
        self, slots: np.ndarray, vectors: np.ndarray, partitions: np.ndarray, old: np.ndarray | None = None
    ) -> None:
        """Code placed slots into their (n, a) `partitions`; `old`: the (n, a) partitions they were in
        before (-1 for new slots), which moved or re-embedded items leave first."""
        if old is not None:
            self.lists.remove(np.repeat(slots, old.shape[1]), old.reshape(-1))
        if not self.lists.trained:
            self.lists.train(vectors, partitions[:, 0])
        width = partitions.shape[1]
        flat, held = partitions.reshape(-1), np.repeat(slots, width)
        rows = np.repeat(np.arange(len(slots)), width)
        if width > 1:  # a slot named twice for one partition is held there once
            _, first = np.unique(np.stack([held, flat]), axis=1, return_index=True)
            flat, held, rows = flat[first], held[first], rows[first]
        self.lists.add(held, vectors[rows], flat)

    def rebuilt(self, slots: np.ndarray, vectors: np.ndarray, partitions: np.ndarray) -> CompressedPartitions:
        """Codes of `slots` (every one the index holds) afresh with the same quantizer, e.g. after the
        slots were renumbered."""
        state = self.lists.state() if self.lists.trained else None
        fresh = CompressedPartitions(self.dim, self.partitions, state, self.code_dims)
        if len(slots):
            fresh.placed(slots, vectors, partitions)
        return fresh

    def shortlist(
        self, queries: np.ndarray, probes: np.ndarray, depth: int, eligible: np.ndarray | None
    ) -> np.ndarray:
        """(n, depth) slots with the best estimates over each row's probed partitions (-1: none)."""
        return self.lists.search(queries, depth, probes, eligible, slots_only=True)[1]

    def ranked(
        self,
        queries: np.ndarray,
        probes: np.ndarray,
        k: int,
        refine: int,
        rows: np.ndarray,
        eligible: np.ndarray | None,
        overlapping: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each query's top k over its probed partitions: the codes' best k x refine rescored by the
        stored `rows` (`overlapping`: a slot may be in two of a row's partitions). (slots, scores,
        codes scanned per query)."""
        if len(queries) == 1 and eligible is None and not overlapping:
            one = self._ranked_one(queries, probes, k, k * refine, rows)
            if one is not None:
                return one
        sizes = self.lists.sizes  # counted before the scan, while the lists' sizes are still in cache
        scanned = np.where(probes >= 0, sizes[np.maximum(probes, 0)], 0).sum(1)
        shortlist = self.shortlist(queries, probes, k * refine, eligible)
        slots, scores = rescore_top_k(queries, rows, shortlist, k, overlapping=overlapping)
        return slots, scores, scanned

    def _ranked_one(self, query, probes, k: int, depth: int, rows):
        """`ranked` for one query, nothing masked, every probe a list holding at least `depth` codes
        together (the serving case), in a few compiled calls (`kernels`): it runs right after the scan,
        which evicts numpy's working set from the caches, so each numpy call would cost several times
        its usual microsecond there. The same scan and the same rescore (the same kernels), so the
        same answer; None where `ranked` must answer."""
        plain = query.dtype == np.float32 and query.flags.c_contiguous and probes.dtype == np.int64
        if not (plain and probes.flags.c_contiguous):  # FAISS reads raw memory
            return None
        scanned = codes_probed(self.lists.sizes, probes)  # -1: a padded probe
        if depth <= k or scanned[0] < depth:  # a shortlist no longer than k, or with empty places
            return None
        shortlist = self.lists.search_one(query, depth, probes)
        if shortlist[0, -1] < 0:  # FAISS puts empty places last; none is expected here
            return None
        slots, scores = rescore_full_shortlist(query, rows, shortlist, k)
        return slots, scores, scanned

    # ---- persistence -----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        if self.lists.trained:
            for name, values in self.lists.state().items():
                np.save(folder / FILES[name], values, allow_pickle=False)

    @staticmethod
    def saved_state(folder: Path) -> dict[str, np.ndarray] | None:
        if not all((folder / file).is_file() for file in FILES.values()):
            return None
        return {name: np.load(folder / file, allow_pickle=False) for name, file in FILES.items()}
