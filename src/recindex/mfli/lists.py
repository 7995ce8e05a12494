"""Leaf -> items lists for one facet of the MFLI index, held in FAISS inverted lists.

A FAISS `IndexIVFFlat` is used only for its inverted lists and its list scanner, never for its coarse
quantizer: the MFLI tree picks the leaves, and `search_preassigned` scans exactly those. Per leaf,
FAISS keeps the member ids (our storage slots) and their full vectors contiguous, which is the
paper's "index -> items" CSR with room to append, so a real-time insert is an append to one list and
a scan reads each leaf as one block (no gather of scattered rows) in compiled code with a top-k heap.
A hashtable direct map makes removing one item O(1) instead of a scan of every list.

Vectors are stored as float32 ("flat") or float16 ("fp16", FAISS's scalar quantizer without
residuals): the scan is bound by memory bandwidth, so half the bytes is close to twice the speed, and
the index rescores the few results it keeps with the float32 vectors.

FAISS lists cannot be added after construction (its `resize` keeps `nlist`), so spare lists are held
for leaves that real-time inserts create; when they run out the owner builds a larger `LeafLists`
(`room_for`).
"""

from __future__ import annotations

import faiss
import numpy as np

STORAGES = ("flat", "fp16")


class LeafLists:
    def __init__(self, dim: int, leaves: int, storage: str = "flat"):
        self.dim, self.storage = dim, storage
        self.capacity = max(64, 2 * leaves)
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
        self.sizes = np.zeros(self.capacity, np.int64)  # items per list, kept here for O(1) reads

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
        self._ivf.add_core(len(ids), faiss.swig_ptr(data), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        np.add.at(self.sizes, lists, 1)

    def remove(self, slots: np.ndarray, leaves: np.ndarray) -> None:
        """Remove slots from the lists they are in (`leaves`, as the caller recorded them)."""
        if len(slots):
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
        counts = np.where(leaves >= 0, self.sizes[np.where(leaves >= 0, leaves, 0)], 0)
        running = np.cumsum(counts, axis=1)
        reached = running >= budget
        stop = np.where(reached.any(1), reached.argmax(1), running.shape[1] - 1)
        return running[np.arange(len(running)), stop]
