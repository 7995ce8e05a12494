"""Leaf -> items lists for one facet of the MFLI index, held in FAISS inverted lists.

A FAISS `IndexIVFFlat` is used only for its inverted lists and its list scanner, never for its coarse
quantizer: the MFLI tree picks the leaves, and `search_preassigned` scans exactly those. Per leaf,
FAISS keeps the member ids (our storage slots) and their full vectors contiguous, which is the
paper's "index -> items" CSR with room to append, so a real-time insert is an append to one list and
a scan reads each leaf as one block (no gather of scattered rows) in compiled code with a top-k heap.
A hashtable direct map makes removing one item O(1) instead of a scan of every list.

Vectors are stored as float32 ("flat"), float16 ("fp16", FAISS's scalar quantizer without
residuals) or 4-bit PQ codes ("pq4", scanned by FAISS's fast-scan kernel, see
`recindex.index.learned.fast_scan`): the scan is bound by memory bandwidth, so half the bytes is close
to twice the speed, and the index rescores what it keeps with the float32 vectors (for "pq4" a deeper
list than k, since 4-bit codes only estimate the score). Fast-scan lists take no `max_codes` budget:
the leaves past the one that reaches the budget are dropped from the walk before the scan instead,
which stops at the same place.

FAISS lists cannot be added after construction (its `resize` keeps `nlist`), so spare lists are held
for leaves that real-time inserts create; when they run out the owner builds a larger `LeafLists`
(`room_for`).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from recindex.index.learned.fast_scan import CODE_DIMS, FastScanLists

STORAGES = ("flat", "fp16", "pq4")


class LeafLists:
    def __init__(
        self,
        dim: int,
        leaves: int,
        storage: str = "flat",
        codes: dict | None = None,
        code_dims: int = CODE_DIMS,
    ):
        """`codes`: for "pq4", the quantizer state of lists these replace (`FastScanLists.state`), so
        that items keep their codes; without it the first `add` trains the quantizer. `code_dims`:
        dimensions per 4-bit code ("pq4")."""
        self.dim, self.storage = dim, storage
        self.capacity = max(64, 2 * leaves)
        self.sizes = np.zeros(self.capacity, np.int64)  # items per list, kept here for O(1) reads
        self._fast: FastScanLists | None = None
        if storage == "pq4":
            self._fast = FastScanLists(dim, self.capacity, code_dims)
            if codes is not None:
                self._fast.restore(codes)
            return
        quantizer = faiss.IndexFlatIP(dim)  # never used: lists are assigned by the caller
        if storage == "flat":
            self._ivf = faiss.IndexIVFFlat(quantizer, dim, self.capacity, faiss.METRIC_INNER_PRODUCT)
        elif storage == "fp16":
            self._ivf = faiss.IndexIVFScalarQuantizer(
                quantizer,
                dim,
                self.capacity,
                faiss.ScalarQuantizer.QT_fp16,
                faiss.METRIC_INNER_PRODUCT,
                False,
            )
        else:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self._quantizer = quantizer  # the IVF object does not own it
        self._ivf.is_trained = True
        self._ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    def code_state(self) -> dict | None:
        """The "pq4" quantizer's state (to save, or to carry into larger lists); None for vectors."""
        return self._fast.state() if self._fast is not None and self._fast.trained else None

    def save_code_state(self, folder: Path) -> None:
        for name, values in (self.code_state() or {}).items():
            np.save(folder / f"pq4_{name}.npy", values, allow_pickle=False)

    def room_for(self, leaves: int) -> bool:
        return leaves <= self.capacity

    def add(self, slots: np.ndarray, vectors: np.ndarray, leaves: np.ndarray) -> None:
        if not len(slots):
            return
        if int(leaves.max()) >= self.capacity:
            raise ValueError(f"leaf {int(leaves.max())} is past the {self.capacity} lists held")
        # keep references to the arrays until the call returns: swig pointers do not own them
        ids = np.ascontiguousarray(slots, dtype=np.int64)
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        lists = np.ascontiguousarray(leaves, dtype=np.int64)
        if self._fast is not None:
            if not self._fast.trained:
                self._fast.train(data, lists)
            self._fast.add(ids, data, lists)
            np.add.at(self.sizes, lists, 1)
            return
        self._ivf.add_core(len(ids), faiss.swig_ptr(data), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        np.add.at(self.sizes, lists, 1)

    def remove(self, slots: np.ndarray, leaves: np.ndarray) -> None:
        """Remove slots from the lists they are in (`leaves`, as the caller recorded them)."""
        if len(slots) and self._fast is not None:
            self._fast.remove(slots, leaves)
            np.subtract.at(self.sizes, np.asarray(leaves, np.int64), 1)
        elif len(slots):
            self._ivf.remove_ids(faiss.IDSelectorArray(np.ascontiguousarray(slots, dtype=np.int64)))
            np.subtract.at(self.sizes, np.asarray(leaves, np.int64), 1)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        leaves: np.ndarray,
        budget: int,
        eligible: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, slots) per query over the items of its `leaves` (n, p) row (-1: none),
        best leaves first, stopping after the leaf that takes the scan to `budget` items."""
        if self._fast is not None:
            walked = np.where(
                np.arange(leaves.shape[1]) <= self._last_leaf(leaves, budget)[:, None], leaves, -1
            )
            return self._fast.search(queries, k, walked, eligible)
        n, probes = leaves.shape
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        lists = np.ascontiguousarray(leaves, dtype=np.int64)
        coarse = np.zeros((n, probes), np.float32)
        scores = np.empty((n, k), np.float32)
        slots = np.empty((n, k), np.int64)
        params = faiss.SearchParametersIVF(nprobe=probes, max_codes=int(budget))
        if eligible is not None:
            bits = np.packbits(eligible, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(eligible), faiss.swig_ptr(bits))
            params.sel = selector
        self._ivf.search_preassigned_c(
            n,
            faiss.swig_ptr(queries),
            k,
            faiss.swig_ptr(lists),
            faiss.swig_ptr(coarse),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(slots),
            False,
            params,
        )
        return scores, slots

    def scanned(self, leaves: np.ndarray, budget: int) -> np.ndarray:
        """Items `search` scans per query: the (n, p) leaves' sizes, best first, up to and including the
        leaf that takes the total to `budget` (where FAISS's `max_codes` stops)."""
        running = self._running(leaves)
        return running[np.arange(len(running)), self._last_leaf(leaves, budget)]

    def _running(self, leaves: np.ndarray) -> np.ndarray:
        counts = np.where(leaves >= 0, self.sizes[np.where(leaves >= 0, leaves, 0)], 0)
        return np.cumsum(counts, axis=1)

    def _last_leaf(self, leaves: np.ndarray, budget: int) -> np.ndarray:
        """Per row, the column of the leaf that takes the scan to `budget` items (else the last)."""
        reached = self._running(leaves) >= budget
        return np.where(reached.any(1), reached.argmax(1), leaves.shape[1] - 1)


def saved_code_state(folder: Path) -> dict | None:
    """A facet's saved "pq4" quantizer (PQ centroids and the leaves' references), None without one."""
    names = ("centroids", "references")
    if not all((folder / f"pq4_{name}.npy").is_file() for name in names):
        return None
    return {name: np.load(folder / f"pq4_{name}.npy", allow_pickle=False) for name in names}
