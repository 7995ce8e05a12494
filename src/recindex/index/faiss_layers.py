"""Look inside a FAISS index built from a factory string: its layers, and search parameters for them.

A factory string such as `OPQ16,IVF1024,PQ16,RFlat` builds nested objects (refine -> pre-transform ->
IVF-PQ). Search-time knobs (nprobe, efSearch, k_factor) and an id selector must be given to the layer
that understands them, wrapped in the parameter objects of the layers around it. FAISS does not do
this nesting for us, so this module walks the layers once and builds the parameter chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

from recindex.errors import InvalidRequest


@dataclass(frozen=True)
class Layers:
    outer: list  # wrappers, outermost first: IndexRefine / IndexPreTransform
    core: faiss.Index  # the index that does the search
    # Plain fields rather than properties: they are read on every search.
    is_ivf: bool
    is_hnsw: bool
    has_refine: bool
    # Stores caller-chosen labels and can delete them: IVF, not under a refine stage, and not fast-scan
    # lists (4-bit codes packed in blocks), where an add after `remove_ids` stores a corrupt code
    # (faiss 1.15.1), so removal there is by tombstone, as for graphs.
    takes_ids: bool
    # Vectors cannot be read back by label: IVF fast-scan lists with no refine stage keep no direct map
    # (FAISS does not update one on add), so exact fallbacks scan their codes instead.
    codes_only: bool

    def knobs(self) -> dict[str, int]:
        """The search parameters that apply to this structure, with their defaults."""
        knobs: dict[str, int] = {}
        if self.is_ivf:
            knobs["nprobe"] = 32
        if self.is_hnsw:
            knobs["ef"] = 128
        if self.has_refine:
            knobs["k_factor"] = 4
        return knobs


def layers_of(index: faiss.Index) -> Layers:
    outer = []
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexRefine | faiss.IndexPreTransform):
        outer.append(node)
        inner = node.base_index if isinstance(node, faiss.IndexRefine) else node.index
        node = faiss.downcast_index(inner)
    is_ivf = isinstance(node, faiss.IndexIVF)
    has_refine = any(isinstance(layer, faiss.IndexRefine) for layer in outer)
    codes_only = is_ivf and not has_refine and isinstance(node, faiss.IndexIVFFastScan)
    takes_ids = is_ivf and not has_refine and not codes_only
    return Layers(outer, node, is_ivf, isinstance(node, faiss.IndexHNSW), has_refine, takes_ids, codes_only)


def search_parameters(layers: Layers, params: dict, k: int, selector=None):
    """A SearchParameters chain for one search; returns (top object, objects to keep alive).

    SWIG does not keep a nested parameter object alive through its parent, so the caller must hold
    every object of the chain until the search returns.
    """
    keep = []
    if layers.is_ivf:
        core = faiss.SearchParametersIVF()
        # Probing more lists than exist means all of them; FAISS clamps that itself except in IVF
        # fast-scan by residual under inner product, which then returns garbage (faiss 1.15.1).
        core.nprobe = min(int(params.get("nprobe", 32)), layers.core.nlist)
    elif layers.is_hnsw:
        core = faiss.SearchParametersHNSW()
        # FAISS does not raise ef to k by itself; below k a graph search returns poorer lists.
        core.efSearch = max(int(params.get("ef", 128)), k)
    elif selector is None:
        # Without a selector a plain parameter object carries nothing, and some indexes (IndexPQ,
        # IndexPQFastScan) refuse any, even under a refine stage.
        core = None
    else:
        core = faiss.SearchParameters()
    if selector is not None:
        core.sel = selector
    if core is not None:
        keep.append(core)
    top = core
    if top is None and not layers.outer:
        return None, keep
    for layer in reversed(layers.outer):
        if isinstance(layer, faiss.IndexPreTransform):
            wrapper = faiss.SearchParametersPreTransform()
            wrapper.index_params = top
        else:
            wrapper = faiss.IndexRefineSearchParameters()
            wrapper.k_factor = float(params.get("k_factor", 4))
            wrapper.base_index_params = top
        keep.append(wrapper)
        top = wrapper
    return top, keep


def accepts_selector(index: faiss.Index, layers: Layers, params: dict) -> bool:
    """Whether this FAISS structure accepts an id selector (some raise 'not implemented')."""
    probe = np.zeros((1, index.d), np.float32)
    bitmap = np.ones((index.ntotal + 7) // 8, np.uint8)
    selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bitmap))
    search_params, keep = search_parameters(layers, params, 1, selector)
    try:
        index.search(probe, 1, params=search_params)
    except RuntimeError:
        return False
    return True


def scan_codes(index: faiss.Index, layers: Layers, queries: np.ndarray, k: int, slots: np.ndarray):
    """(distances, labels) of the k best of `slots` (sequential labels) by their codes: every IVF list
    probed under an id selector that keeps `slots`, for lists that cannot give their vectors back."""
    mask = np.zeros(index.ntotal, bool)
    mask[slots] = True
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
    search_params, keep = search_parameters(layers, {"nprobe": layers.core.nlist}, k, selector)
    distances, labels = index.search(queries, k, params=search_params)
    del keep, bitmap  # alive until the search is over
    return distances, labels


def train(index: faiss.Index, layers: Layers, sample: np.ndarray) -> None:
    """Train `index` on `sample`: the coarse quantizer of an IVF with every OpenMP thread, the rest with one.

    Beyond the coarse k-means (one large k-means, well parallelised), training runs many tiny k-means:
    one per PQ sub-quantizer, 16 or 256 centroids each. With two threads their OpenMP synchronisation
    cost up to 10x their work (measured 18 s of CPU for the PQ of IVF1024,PQ32x4fs on 65k vectors on a
    loaded 2-core machine, 1.7 s with one thread). Other indexes, and an IVF under a vector
    transform (OPQ, whose lists live in the space the transform learns), train as one call on every
    thread, as before.
    """
    core = layers.core
    if not layers.is_ivf or any(isinstance(layer, faiss.IndexPreTransform) for layer in layers.outer):
        index.train(sample)
        return
    core.train_q1(len(sample), faiss.swig_ptr(sample), False, core.metric_type)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.train(sample)  # FAISS sees the trained coarse quantizer and leaves it as it is
    finally:
        faiss.omp_set_num_threads(before)


@contextmanager
def small_sample_training(index: faiss.Index) -> Iterator[None]:
    """While training `index`, let each k-means it runs (IVF lists, PQ codebooks, OPQ's rotation) take
    as few points per centroid as it is given, without a warning.

    FAISS's k-means prints "WARNING clustering N points to K centroids: please provide at least ..." on
    stderr, from C++, whenever it has fewer than `min_points_per_centroid` (39) points per centroid. On
    a small catalogue that is the normal case, and k-means stays well defined down to one point per
    centroid; FAISS still refuses fewer points than centroids, and that error reaches the user.
    """
    keep: list = []  # objects handed to FAISS by pointer: alive until training is over
    attached: list = []
    for node in _nodes(index):
        if hasattr(node, "cp"):  # IndexIVF: its coarse quantizer's k-means
            _quiet(node.cp)
        if isinstance(getattr(node, "pq", None), faiss.ProductQuantizer):
            _quiet(node.pq.cp)
        if isinstance(node, faiss.OPQMatrix) and node.pq is None:
            # OPQ trains a PQ of its own, which is not reachable unless given one to train instead.
            pq = faiss.ProductQuantizer(node.d_out, node.M, 8)
            _quiet(pq.cp)
            node.pq = pq
            keep.append(pq)
            attached.append(node)
    try:
        yield
    finally:
        for node in attached:
            node.pq = None  # it would point at freed memory once `keep` goes


def prepare_training(index: faiss.Index, layers: Layers, kmeans_iterations: int) -> None:
    """Settings every training gets: no polysemous codes, and `kmeans_iterations` Lloyd iterations
    for the coarse k-means of every IVF inside `index`.

    Polysemous codes only serve polysemous search, which recindex never runs; training them was most of
    the build time of IVF-PQ. FAISS runs 25 k-means iterations by default; the coarse k-means is most
    of an IVF build, and after 10 iterations its lists give the same recall@100 (measured in
    docs/indexes.md, "Build times").
    """
    if int(kmeans_iterations) < 1:
        raise InvalidRequest(f"kmeans_iterations must be at least 1, got {kmeans_iterations}")
    for layer in (layers.core, *layers.outer):
        if hasattr(layer, "do_polysemous_training"):
            layer.do_polysemous_training = False
    for node in _nodes(index):
        if isinstance(node, faiss.IndexIVF):
            node.cp.niter = int(kmeans_iterations)


def _quiet(cp: faiss.ClusteringParameters) -> None:
    cp.min_points_per_centroid = 1


def _nodes(index: faiss.Index) -> Iterator:
    """Every index and vector transform inside a factory-built index, outermost first."""
    node = faiss.downcast_index(index)
    yield node
    if isinstance(node, faiss.IndexRefine):
        yield from _nodes(node.base_index)
        yield from _nodes(node.refine_index)
    elif isinstance(node, faiss.IndexPreTransform):
        for position in range(node.chain.size()):
            yield faiss.downcast_VectorTransform(node.chain.at(position))
        yield from _nodes(node.index)
    elif isinstance(node, faiss.IndexHNSW) and node.storage is not None:
        yield from _nodes(node.storage)


def reset_stats() -> None:
    faiss.cvar.hnsw_stats.reset()
    faiss.cvar.indexIVF_stats.reset()


def distances_computed(layers: Layers, n_queries: int, k: int, params: dict, n_items: int) -> float:
    """Candidates scored per query in the last search, from FAISS's own counters."""
    if layers.is_hnsw:
        scored = faiss.cvar.hnsw_stats.ndis / max(1, n_queries)
    elif layers.is_ivf:
        scored = faiss.cvar.indexIVF_stats.ndis / max(1, n_queries)
        scored += layers.core.nlist  # the coarse quantizer scores every centroid
    else:
        scored = float(n_items)
    if layers.has_refine:
        scored += k * float(params.get("k_factor", 4))
    return scored


def ivf_lists(index: faiss.Index, labels: np.ndarray) -> np.ndarray | None:
    """The inverted list of each item, by item id (-1 where absent), for an index with IVF lists;
    None for one without. `labels` maps FAISS's stored ids (slots) to item ids."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    bucket_of = np.full(int(labels.max()) + 1 if len(labels) else 0, -1, np.int64)
    for cell in range(ivf.nlist):
        size = ivf.invlists.list_size(cell)
        if size:
            ids = labels[faiss.rev_swig_ptr(ivf.invlists.get_ids(cell), size)]
            bucket_of[ids[ids >= 0]] = cell
    return bucket_of
