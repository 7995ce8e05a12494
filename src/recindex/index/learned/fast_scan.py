"""Partitions held as 4-bit product-quantization codes and scanned with FAISS's SIMD fast-scan kernel.

A learned index scans whole partitions per query, and on a large catalogue that scan is most of the
cost: at a million items a query that must reach recall 0.95 reads tens of thousands of vectors. Held
as float32 (256 B at d=64) or float16 they are bound by memory bandwidth; held as 4-bit PQ codes
(half a byte per code: 32 B at d=64 with one code per dimension, 16 B with one per two) and scored
by FAISS's fast-scan kernel (lookup tables in SIMD registers, 32 codes per block), the same scan reads
8-16x less memory and runs in registers. The codes only
estimate the inner product, so the index keeps the best `depth` estimates per query and rescores
them with the stored float32 vectors (the exact refine): that depth is the accuracy knob, chosen on
validation like the number of partitions walked.

FAISS's `IndexIVFPQFastScan` is used only as a container of inverted lists and its scanner, never for
its coarse quantizer: the learned index says which partitions a query walks (`search_preassigned`).
Codes are of each item's residual to its partition's reference vector (the partition's mean at build
time), and the scanner adds the query's inner product with that
reference back as the list's bias, so an item's estimate is q.ref + q.pq(x - ref): the residuals are
small, and their codes far more exact than codes of the vectors themselves. A list that was empty at
training time (a partition a real-time insert creates) takes the mean of the first vectors added to
it as its reference.

The fast-scan lists are packed in blocks of 32 codes (`BlockInvertedLists`); FAISS's own `add_core`
and `remove_ids` do not handle preassigned, packed lists (the first reads flat codes as packed ones,
the second refuses a hashtable direct map), so appending and removing are written here with FAISS's
code packer: an append repacks the list's last, partly filled block and the new ones; a removal
unpacks the list, drops the removed codes and packs it again (a list holds a few hundred codes).
"""

from __future__ import annotations

import faiss
import numpy as np

from recindex.index.learned.kernels import inner_products, list_biases

BLOCK = 32  # codes per packed block (FAISS fast-scan's bbs)
TRAIN_SAMPLE = 65_536  # vectors the product quantizer is trained on (FAISS's PQ trains on 256 x 2^nbits)


CODE_DIMS = 1  # dimensions per 4-bit code by default; why one, not two, in `subquantizers`
SAVED_BEFORE_CODE_DIMS = 2  # what an index saved before `code_dims` existed holds: one code per two dims


def subquantizers(dim: int, code_dims: int = CODE_DIMS) -> int:
    """Sub-quantizers of 4 bits for `code_dims` dimensions each (a divisor of `dim`).

    One code per dimension (32 B per item at d=64) is the default: at 1M items of the index
    benchmark's synthetic vectors, CI's lists reached recall@100 0.95 with a refine of 4 x k at 1.4x
    the q/s of one code per two dimensions (16 B per item), which needed 16 x k, and only the finer
    codes reached 0.99 (benchmarks/learned_vs_hnsw.py; docs/indexes.md, "Compressed lists"): the
    finer estimate needs far fewer exact rescores. Two dimensions per code halve the codes' memory."""
    if not isinstance(code_dims, int) or isinstance(code_dims, bool) or code_dims < 1 or dim % code_dims:
        raise ValueError(f"code_dims must be a positive divisor of the dimension {dim}, got {code_dims!r}")
    return dim // code_dims


class FastScanLists:
    """Partition -> (slots, 4-bit codes); a scan returns each query's best `depth` estimates."""

    def __init__(self, dim: int, capacity: int, code_dims: int = CODE_DIMS):
        self.dim = dim
        self.capacity = int(capacity)
        m = subquantizers(dim, code_dims)
        self._quantizer = faiss.IndexFlatIP(dim)  # never searched: partitions are given by the caller
        self._ivf = faiss.IndexIVFPQFastScan(
            self._quantizer, dim, self.capacity, m, 4, faiss.METRIC_INNER_PRODUCT, BLOCK
        )
        self._ivf.by_residual = True  # the caller's coarse scores (q . reference) are the lists' biases
        self._lists = faiss.downcast_InvertedLists(self._ivf.invlists)
        self._packer = self._ivf.get_CodePacker()
        self.code_size = int(self._ivf.code_size)
        self.block_bytes = int(self._lists.block_size)
        self.references = np.zeros((self.capacity, dim), np.float32)
        self.sizes = np.zeros(self.capacity, np.int64)
        self._params_by_width: dict[int, faiss.SearchParametersIVF] = {}

    @property
    def code_dims(self) -> int:
        return self.dim // int(self._ivf.pq.M)

    @property
    def trained(self) -> bool:
        return bool(self._ivf.is_trained)

    # ---- training and the quantizer's state ------------------------------------------------------

    def train(self, vectors: np.ndarray, lists: np.ndarray, seed: int = 0) -> None:
        """Set each list's reference to the mean of its vectors, and train the quantizer on a sample
        of the residuals."""
        lists = np.asarray(lists, np.int64)
        sums = np.zeros((self.capacity, self.dim), np.float64)
        np.add.at(sums, lists, vectors)
        counts = np.bincount(lists, minlength=self.capacity)[:, None]
        self.references = (sums / np.maximum(counts, 1)).astype(np.float32)
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(vectors), min(len(vectors), TRAIN_SAMPLE), replace=False)
        residuals = np.ascontiguousarray(vectors[sample] - self.references[lists[sample]], np.float32)
        pq = self._ivf.pq
        pq.cp.seed = seed
        pq.train(residuals)
        self._ivf.is_trained = True

    def state(self) -> dict[str, np.ndarray]:
        """What makes the codes reproducible: the PQ centroids and the lists' references."""
        centroids = faiss.vector_to_array(self._ivf.pq.centroids).astype(np.float32)
        return {"centroids": centroids, "references": self.references.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        pq = self._ivf.pq
        centroids = np.asarray(state["centroids"], np.float32).reshape(-1)
        if centroids.size != pq.M * pq.ksub * pq.dsub:
            raise ValueError(f"{centroids.size} PQ centroid values do not fit PQ{pq.M}x4 at dim {self.dim}")
        faiss.copy_array_to_vector(centroids, pq.centroids)
        references = np.asarray(state["references"], np.float32)
        rows = min(len(references), self.capacity)
        self.references[:rows] = references[:rows]
        self._ivf.is_trained = True

    # ---- writes ----------------------------------------------------------------------------------

    def add(self, slots: np.ndarray, vectors: np.ndarray, lists: np.ndarray) -> None:
        if not len(slots):
            return
        lists = np.asarray(lists, np.int64)
        if int(lists.max()) >= self.capacity or int(lists.min()) < 0:
            raise ValueError(f"lists must be in 0..{self.capacity - 1}")
        self._reference_new_lists(vectors, lists)
        residuals = np.ascontiguousarray(vectors - self.references[lists], np.float32)
        codes = self._ivf.pq.compute_codes(residuals)
        slots = np.asarray(slots, np.int64)
        order = np.argsort(lists, kind="stable")
        bounds = np.flatnonzero(np.diff(lists[order])) + 1
        for group in np.split(order, bounds):
            self._append(int(lists[group[0]]), slots[group], codes[group])

    def _reference_new_lists(self, vectors: np.ndarray, lists: np.ndarray) -> None:
        fresh = ~self.references[lists].any(axis=1)
        if fresh.any():
            numbers, inverse = np.unique(lists[fresh], return_inverse=True)
            sums = np.zeros((len(numbers), self.dim), np.float64)
            np.add.at(sums, inverse, vectors[fresh])
            self.references[numbers] = sums / np.bincount(inverse)[:, None]

    def remove(self, slots: np.ndarray, lists: np.ndarray) -> None:
        """Remove slots from the lists they are in (`lists`, as the caller recorded them; -1: none)."""
        slots, lists = np.asarray(slots, np.int64), np.asarray(lists, np.int64)
        placed = lists >= 0
        for number in np.unique(lists[placed]):
            self._drop(int(number), slots[placed & (lists == number)])

    def _append(self, number: int, slots: np.ndarray, codes: np.ndarray) -> None:
        size = int(self.sizes[number])
        first = size // BLOCK  # the partly filled block, repacked with the new codes
        kept = size - first * BLOCK
        flat = self._unpacked(number, first, kept)
        flat = np.concatenate([flat, codes])
        self._lists.resize(number, size + len(slots))
        faiss.rev_swig_ptr(self._lists.get_ids(number), size + len(slots))[size:] = slots
        self._pack(number, first, flat)
        self.sizes[number] = size + len(slots)

    def _drop(self, number: int, slots: np.ndarray) -> None:
        size = int(self.sizes[number])
        ids = faiss.rev_swig_ptr(self._lists.get_ids(number), size).copy()
        keep = ~np.isin(ids, slots)
        if keep.all():
            return
        codes = self._unpacked(number, 0, size)[keep]
        self._lists.resize(number, int(keep.sum()))
        faiss.rev_swig_ptr(self._lists.get_ids(number), int(keep.sum()))[:] = ids[keep]
        self._pack(number, 0, codes)
        self.sizes[number] = int(keep.sum())

    def _blocks(self, number: int, blocks: int) -> np.ndarray:
        return faiss.rev_swig_ptr(self._lists.get_codes(number), blocks * self.block_bytes)

    def _unpacked(self, number: int, first_block: int, count: int) -> np.ndarray:
        """`count` flat codes of a list, from its block `first_block` on."""
        blocks = -(-count // BLOCK)
        flat = np.zeros((blocks * BLOCK, self.code_size), np.uint8)
        if blocks:
            packed = self._blocks(number, first_block + blocks)
            for b in range(blocks):
                at = (first_block + b) * self.block_bytes
                self._packer.unpack_all(faiss.swig_ptr(packed[at:]), faiss.swig_ptr(flat[b * BLOCK :]))
        return flat[:count]

    def _pack(self, number: int, first_block: int, codes: np.ndarray) -> None:
        """Write flat codes into a list's blocks from `first_block` on (the list is already sized)."""
        blocks = -(-len(codes) // BLOCK)
        padded = np.zeros((blocks * BLOCK, self.code_size), np.uint8)
        padded[: len(codes)] = codes
        packed = self._blocks(number, first_block + blocks)
        for b in range(blocks):
            at = (first_block + b) * self.block_bytes
            self._packer.pack_all(faiss.swig_ptr(padded[b * BLOCK :]), faiss.swig_ptr(packed[at:]))

    # ---- search ----------------------------------------------------------------------------------

    def _plain_params(self, width: int) -> faiss.SearchParametersIVF:
        """Search parameters without a selector, one object per width: made once, never changed after,
        so concurrent searches share them (building one through SWIG costs more than a small scan)."""
        params = self._params_by_width.get(width)
        if params is None:
            params = self._params_by_width.setdefault(width, faiss.SearchParametersIVF(nprobe=width))
        return params

    def search(
        self,
        queries: np.ndarray,
        depth: int,
        probes: np.ndarray,
        eligible: np.ndarray | None = None,
        *,
        slots_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's `depth` best (estimated scores, slots) over its `probes` (n, p) lists (-1:
        none); -inf / -1 past the candidates found (at most as many columns as codes held).
        `eligible`: mask over slots a result may hold. `slots_only`: the caller reads only the slots
        (the scores past the candidates are then left as FAISS writes them)."""
        n, width = probes.shape
        # no list holds more than every code: a deeper ask (a huge refine) would only allocate -1s
        depth = max(1, min(int(depth), int(self.sizes.sum())))
        queries = np.ascontiguousarray(queries, np.float32)
        probes = np.ascontiguousarray(probes, np.int64)
        bias = list_biases(queries, self.references, probes)  # padded probes: the row's first bias
        if eligible is None:
            params = self._plain_params(width)
        else:
            params = faiss.SearchParametersIVF(nprobe=width)
            bits = np.packbits(eligible, bitorder="little")  # kept alive until the call returns
            selector = faiss.IDSelectorBitmap(len(eligible), faiss.swig_ptr(bits))
            params.sel = selector
        scores, slots = self._scan(queries, depth, probes, bias, params)
        if not slots_only:
            scores[slots < 0] = -np.inf
        return scores, slots

    def search_one(self, query: np.ndarray, depth: int, probes: np.ndarray) -> np.ndarray:
        """`search`'s slots for one (1, d) float32 query over (1, p) probes that are all lists, nothing
        masked, and at most the codes they hold as `depth` (so no place is left empty): the serving
        case, without the checks and conversions that cost as much as a small scan."""
        bias = inner_products(query, self.references, probes)  # every probe a list: no padding to zero
        return self._scan(query, depth, probes, bias, self._plain_params(probes.shape[1]))[1]

    def _scan(self, queries, depth: int, probes, bias, params) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        scores = np.empty((n, depth), np.float32)
        slots = np.empty((n, depth), np.int64)
        self._ivf.search_preassigned_c(
            n,
            faiss.swig_ptr(queries),
            depth,
            faiss.swig_ptr(probes),
            faiss.swig_ptr(bias),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(slots),
            False,
            params,
        )
        return scores, slots
