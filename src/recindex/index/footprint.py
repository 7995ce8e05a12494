"""How many bytes an in-process index takes for n items, part by part, from the formulas of its
structures: the FAISS objects a factory string builds (codes, graph links, list ids, centroids,
codebooks), recindex's own per-item tables (the slot table's id arrays and its Python dict), and the
item attributes.

The FAISS parts are read off an empty index of the spec (its code size, list count, graph degree),
so any factory string of the structures below is sized, not only the planner's own choices; each part
says whether `faiss.serialize_index` writes it, so the formulas can be checked against real indexes.
Parts that live in RAM but are not serialized (the IVF direct map's hash table, the Python dict) use
the memory layouts of their implementations (libstdc++'s unordered_map, CPython's dict and int).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss

from recindex.errors import InvalidRequest
from recindex.index.base import BaseIndex
from recindex.index.exact_index import ExactIndex
from recindex.index.faiss_index import FaissIndex
from recindex.index.faiss_ondisk import OnDiskFaissIndex
from recindex.index.sharded import ShardedIndex

# A libstdc++ unordered_map<int64, int64> node (next pointer + key + value = 24 bytes, 32 from malloc)
# plus one bucket pointer per element at its maximum load factor of 1.
HASH_ENTRY_BYTES = 32 + 8
# A CPython int object for a value below 2**30 (28 bytes, 32 from pymalloc's 16-byte classes) and
# one for a value below 2**60 (32 bytes).
PY_INT_BYTES = 32
DICT_ENTRY_BYTES = 24  # hash, key pointer, value pointer
ATTRIBUTE_KINDS = {"str": 4, "num": 8, "bool": 1}  # bytes per item of an attribute column (attributes.py)


@dataclass(frozen=True)
class Part:
    name: str
    per_item: float = 0.0  # bytes per item
    fixed: float = 0.0  # bytes whatever the count
    where: str = "ram"  # "ram"; "disk": in the on-disk lists file; "saved": only in the saved index
    serialized: bool = True  # faiss.serialize_index writes it (FAISS parts only)

    def total(self, n: int) -> float:
        return self.per_item * n + self.fixed


@dataclass(frozen=True)
class Footprint:
    parts: list[Part]
    n: int
    dim: int = 0  # of the vectors a build takes in (float32)

    def ram(self) -> float:
        return sum(p.total(self.n) for p in self.parts if p.where == "ram")

    def build_peak(self) -> float:
        """RAM at the peak of a build: the index plus one more float32 copy of the vectors. A build
        holds the caller's vectors while the index copies them in, and FAISS's growing buffers (the
        vectors of a refine stage or a Flat storage, in one `std::vector`) hold their old and new
        capacity at once while an add grows them: at 10M x 64 in batches of 1M, 2 GB over the index as
        the add from 8M to 9M items copied 8M vectors (docs/scale.md, "10M items")."""
        return self.ram() + 4.0 * self.dim * self.n

    def disk(self) -> float:
        """Bytes of the on-disk lists (what the kernel pages in as searches probe them)."""
        return sum(p.total(self.n) for p in self.parts if p.where == "disk")

    def serialized(self) -> float:
        """What faiss.serialize_index writes for the FAISS structure (for checking the formulas)."""
        return sum(p.total(self.n) for p in self.parts if p.serialized)

    def ram_per_item(self) -> float:
        return self.ram() / max(self.n, 1)


def python_dict_bytes(n: int) -> float:
    """A dict of n int -> int entries built by insertion (SlotTable's id -> slot map): its index table,
    its entry array (two thirds of the table) and the int objects of keys and values."""
    if n == 0:
        return 0.0
    size = 8
    while size * 2 // 3 < n:  # a full dict grows to the power of two at or above 3 x its entries
        size *= 2
    width = 1 if size <= 128 else 2 if size <= 1 << 16 else 4 if size <= 1 << 32 else 8
    return size * width + (size * 2 // 3) * DICT_ENTRY_BYTES + 2 * n * PY_INT_BYTES


def id_table_parts(n: int) -> list[Part]:
    return [
        Part("id table: slot -> id (int64)", per_item=8, serialized=False),
        Part(
            "id table: id -> slot (Python dict)", per_item=python_dict_bytes(n) / max(n, 1), serialized=False
        ),
    ]


def attribute_parts(attributes: list[str]) -> list[Part]:
    """Columns named by kind: str, num, bool, or str_list:W (W values per item at most)."""
    parts = []
    for text in attributes:
        kind, _, width = text.partition(":")
        if kind == "str_list" and width.isdigit() and 0 < int(width) <= 1024:
            parts.append(Part(f"attribute ({text})", per_item=4 * int(width), serialized=False))
        elif kind in ATTRIBUTE_KINDS and not width:
            parts.append(Part(f"attribute ({kind})", per_item=ATTRIBUTE_KINDS[kind], serialized=False))
        else:
            raise InvalidRequest(
                f"attribute {text!r}: expected str, num, bool or str_list:W (W in 1..1024 values per item)"
            )
    return parts


def index_footprint(index: BaseIndex, n: int, attributes: list[str] | None = None) -> Footprint:
    """The bytes of `index` (an empty index of the spec) once it holds n items."""
    extra = attribute_parts(attributes or [])
    if isinstance(index, ShardedIndex):
        count = len(index.shards)
        share = math.ceil(n / count)
        inner = index_footprint(index.shards[0], share, attributes)
        return Footprint([_scaled(p, count, share, n) for p in inner.parts], n, index.dim)
    if isinstance(index, ExactIndex):
        width = {"float32": 4, "float16": 2, "int8": 1}[index.storage] * index.dim
        parts = [Part(f"vectors ({index.storage})", per_item=width, serialized=False)]
        if index.storage == "int8":
            parts.append(Part("int8 scale", fixed=4 * index.dim, serialized=False))
        if index.metric == "l2":
            parts.append(Part("squared norms", per_item=4, serialized=False))
        return Footprint([*parts, *id_table_parts(n), *extra], n, index.dim)
    if isinstance(index, FaissIndex):
        on_disk = isinstance(index, OnDiskFaissIndex)
        parts = faiss_parts(index.index, index.metric, lists_on_disk=on_disk)
        return Footprint([*parts, *id_table_parts(n), *extra], n, index.dim)
    raise InvalidRequest(
        f"the planner sizes in-process backends (exact, faiss, faiss_ondisk, sharded), not {index.backend}"
    )


def _scaled(part: Part, count: int, share: int, n: int) -> Part:
    """A shard's part for all shards: fixed costs once per shard, per-item costs as they were."""
    per_item = part.per_item * share * count / max(n, 1)
    return Part(part.name, per_item, part.fixed * count, part.where, part.serialized)


def faiss_parts(
    index: faiss.Index, metric: str = "ip", *, lists_on_disk: bool = False, direct_map: bool = True
) -> list[Part]:
    """The parts of a FAISS structure built by a factory string (outer wrappers first). `direct_map`:
    whether an IVF inside gets recindex's hash-table direct map (not under a refine stage, which gives
    vectors back itself, and never on fast-scan lists: FaissIndex._train)."""
    node = faiss.downcast_index(index)
    d = node.d
    if isinstance(node, faiss.IndexPreTransform):
        parts = []
        for position in range(node.chain.size()):
            transform = faiss.downcast_VectorTransform(node.chain.at(position))
            if isinstance(transform, faiss.LinearTransform):
                matrix = 4 * transform.d_in * transform.d_out + 4 * transform.d_out
                parts.append(Part(f"{type(transform).__name__} matrix", fixed=matrix))
        return parts + faiss_parts(node.index, metric, lists_on_disk=lists_on_disk, direct_map=direct_map)
    if isinstance(node, faiss.IndexRefine):
        refine = faiss_parts(node.refine_index, metric)
        return faiss_parts(node.base_index, metric, lists_on_disk=lists_on_disk, direct_map=False) + [
            Part(f"refine {p.name}", p.per_item, p.fixed, p.where, p.serialized) for p in refine
        ]
    if isinstance(node, faiss.IndexHNSW):
        m = node.hnsw.nb_neighbors(1)
        # Level 0 has 2M links; an item reaches level l with probability M**-l, each level M links.
        links = 4 * (2 * m + m / (m - 1))
        graph = Part(f"HNSW{m} links, levels and offsets", per_item=links + 4 + 8)
        return faiss_parts(node.storage, metric) + [graph]
    if isinstance(node, faiss.IndexIVF):
        return _ivf_parts(
            node, metric, lists_on_disk, direct_map and not isinstance(node, faiss.IndexIVFFastScan)
        )
    if isinstance(node, faiss.IndexFlatCodes | faiss.IndexPQFastScan):
        parts = [Part(_codes_name(node), per_item=node.code_size)]
        if isinstance(node, faiss.IndexPQFastScan):
            parts[0] = Part(_codes_name(node), per_item=node.code_size, fixed=node.bbs * node.code_size / 2)
        return parts + _quantizer_parts(node, d)
    raise InvalidRequest(f"the planner has no formula for the FAISS structure {type(node).__name__}")


def _ivf_parts(ivf: faiss.IndexIVF, metric: str, on_disk: bool, direct_map: bool) -> list[Part]:
    parts = [
        Part(f"{p.name} (coarse quantizer)", fixed=p.fixed + p.per_item * ivf.nlist, serialized=p.serialized)
        for p in faiss_parts(ivf.quantizer, metric)
    ]
    lists = "disk" if on_disk else "ram"
    code = ivf.code_size
    padding = 0.0
    if isinstance(ivf, faiss.IndexIVFFastScan):  # lists are blocks of bbs codes: half a block wasted a list
        padding = ivf.nlist * ivf.bbs * code / 2
    # On disk, index.faiss holds the list table, not the lists: they are in the lists file.
    parts.append(Part(_codes_name(ivf), per_item=code, fixed=padding, where=lists, serialized=not on_disk))
    parts.append(Part("list ids (int64)", per_item=8, where=lists, serialized=not on_disk))
    parts += _quantizer_parts(ivf, ivf.d)
    if on_disk:  # offset, size and capacity of each list (plus a record per free stretch of the file)
        parts.append(Part("on-disk list table", fixed=24 * ivf.nlist))
    if direct_map:  # recindex's hash-table direct map (FaissIndex._train): 16 bytes a pair when serialized
        parts.append(Part("direct map (saved as pairs)", per_item=16, where="saved"))
        parts.append(Part("direct map (hash table in RAM)", per_item=HASH_ENTRY_BYTES, serialized=False))
    if isinstance(ivf, faiss.IndexIVFPQ) and metric == "l2" and ivf.by_residual:
        table = 4.0 * ivf.nlist * ivf.pq.M * ivf.pq.ksub
        if table <= faiss.cvar.precomputed_table_max_bytes:  # FAISS skips a larger one
            parts.append(Part("IVF-PQ precomputed table (L2)", fixed=table, serialized=False))
    return parts


def _quantizer_parts(node, d: int) -> list[Part]:
    pq = getattr(node, "pq", None)
    if isinstance(pq, faiss.ProductQuantizer):
        return [Part("PQ codebooks", fixed=4.0 * pq.M * pq.ksub * pq.dsub)]
    sq = getattr(node, "sq", None)
    if isinstance(sq, faiss.ScalarQuantizer):
        return [Part("SQ ranges", fixed=4.0 * 2 * d)]
    return []


def _codes_name(node) -> str:
    if isinstance(node, faiss.IndexFlat | faiss.IndexIVFFlat):
        return "vectors (float32)"
    if getattr(node, "pq", None) is not None:
        return "PQ codes"
    if getattr(node, "sq", None) is not None:
        return "SQ codes"
    return "codes"
