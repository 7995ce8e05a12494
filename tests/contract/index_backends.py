"""The backends the contract suite runs, each as a named factory with what it promises.

A factory makes an empty index: `make(dim, metric, material) -> BaseIndex`. `material` is what the
factory cannot invent: a folder for backends that keep files of their own (Milvus Lite), for the
learned indexes that serve a trained model, that model's bundle (URI's decoder weights, token sizes and
codes; SCI's query views of the items), trained once per session by `family_bundle` in tests/conftest.py,
and for a backend on a server (`Backend.server`), the uri of the run's server of that kind
(tests/milvus_servers.py).

Adding a backend to the suite is one entry in BACKENDS.
"""

from __future__ import annotations

import importlib.util
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recindex.bundle import Bundle
from recindex.errors import InvalidRequest
from recindex.index.base import BaseIndex
from recindex.pipelines.indexes import make_index
from recindex.sci.family import ci_options
from recindex.uri.family import uri_options


@dataclass(frozen=True)
class Material:
    folder: Path  # this build's own folder
    bundle: Bundle | None = None  # the trained bundle of `Backend.family`, when it has one
    uri: str | None = None  # the server of `Backend.server`, when it has one


@dataclass(frozen=True)
class Backend:
    name: str  # the test id, and the name every failure message starts with: the spec, then "+" and
    # the search parameters the factory sets, where it sets any
    make: Callable[[int, str, Material], BaseIndex]
    # Least recall@10 against exact search on the suite's vectors, with the factory's parameters. None
    # only where the backend's routing was learned on another catalogue, so that overlap with exact on
    # these vectors says nothing about the backend (`why` says so); every other check still applies.
    recall: float | None
    # Largest difference between a returned score and the item's true score (None: scores come from
    # compressed codes and are approximations by design).
    score_error: float | None = 1e-5
    why: str = ""  # what the recall floor allows for, where it is below 1
    family: str | None = None  # the model family whose trained bundle the factory reads
    modules: tuple[str, ...] = ()  # optional engines it needs (the case skips, saying so, without them)
    server: str | None = None  # the Milvus server it runs on (milvus_servers.KINDS); None: in process

    def missing(self) -> str | None:
        absent = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if absent:
            return f"{self.name}: {', '.join(absent)} not installed (pip install 'recindex[milvus]')"
        return None

    def __str__(self) -> str:
        return self.name


def spec(text: str, **params) -> Callable[[int, str, Material], BaseIndex]:
    """A backend that needs nothing but its spec string (and optional default search parameters)."""
    return lambda dim, metric, material: make_index(text, dim, metric, search_params=params or None)


def milvus(index_type: str, **params) -> Callable[[int, str, Material], BaseIndex]:
    """A Milvus Lite file of the build's own, or on a server a collection of the build's own."""

    def make(dim, metric, material):
        if material.uri is None:
            options = {"uri": str(material.folder / "milvus.db"), "collection": "contract"}
        else:  # the server is shared by every test of the run (and both workers)
            options = {"uri": material.uri, "collection": f"contract_{uuid.uuid4().hex[:12]}"}
        return make_index(f"milvus:{index_type}", dim, metric, search_params=params or None, options=options)

    return make


def milvus_backends(server: str | None) -> list[Backend]:
    """The Milvus backends of the suite on a Milvus Lite file (server None), or on a server the HNSW one
    alone: what a server changes (how missing values are stored, consistency) does not depend on the
    index type, and FLAT on servers is in test_milvus_specific. One index type keeps the run short."""
    at = f"@{server}" if server else ""
    flat = [] if server else [Backend("milvus:FLAT", milvus("FLAT"), 1.0, modules=MILVUS)]
    return [
        *flat,
        Backend(
            f"milvus:HNSW+ef=128{at}",
            milvus("HNSW", ef=128),
            0.9,
            why="a graph search",
            modules=MILVUS,
            server=server,
        ),
    ]


def uri(beam: int | None = None) -> Callable[[int, str, Material], BaseIndex]:
    """The URI bundle's decoder, token sizes and learned codes; the suite's items beyond the bundle's
    catalogue are coded by the decoder as they arrive, as the service does for new items. Without a
    beam, the beam is as wide as the tree has leaves."""

    def make(dim, metric, material):
        options, _ = uri_options(material.bundle, "uri", {})
        if dim != 3 * material.bundle.model.dim:
            raise InvalidRequest(f"the URI bundle (d={material.bundle.model.dim}) serves 3 x d dimensions")
        every_leaf = math.prod(options["token_sizes"][: options["leaf_layers"]])
        params = {"beam": beam or every_leaf}
        return make_index("uri", dim, metric, search_params=params, options=options)

    return make


def ci(text: str, *, logged_queries: bool = False, **params) -> Callable[[int, str, Material], BaseIndex]:
    """The SCI bundle's query views of its items (ids below its catalogue size are placed by them; the
    rest by their item vectors, as items added after a build are) and, for coarse=items+queries, one
    logged query per training user."""

    def make(dim, metric, material):
        coarse = {"coarse": "items+queries"} if logged_queries else {}
        options, _ = ci_options(material.bundle, text, coarse)
        # The suite's vectors are not the bundle's item vectors, so the bundle's query views cannot agree
        # with them: the build's check of the two views (min_agreement) would refuse every build.
        options["min_agreement"] = 0.0
        return make_index(text, dim, metric, search_params=params or None, options=options)

    return make


MILVUS = ("pymilvus", "milvus_lite")

BACKENDS = [
    Backend("exact", spec("exact"), 1.0),
    Backend("exact:float16", spec("exact:float16"), 0.98, score_error=2e-3, why="rounding ties"),
    Backend(
        "exact:int8",
        spec("exact:int8"),
        0.95,
        score_error=0.1,
        why="rounding ties; the per-dimension scale is fixed by the first add, later values are clipped",
    ),
    Backend("faiss:Flat", spec("faiss:Flat"), 1.0),
    Backend("faiss:HNSW16", spec("faiss:HNSW16"), 0.95, why="a graph search (ef 128)"),
    Backend("faiss:IVF16,Flat", spec("faiss:IVF16,Flat"), 0.95, why="inverted lists (nprobe 32 by default)"),
    Backend(
        "faiss:IVF16,PQ12x4,RFlat",
        spec("faiss:IVF16,PQ12x4,RFlat"),
        0.9,
        why="PQ codes of 4 bits per 2 dimensions pick 4k candidates, re-scored exactly",
    ),
    Backend(
        "faiss:OPQ12,IVF16,PQ12x4,RFlat",
        spec("faiss:OPQ12,IVF16,PQ12x4,RFlat"),
        0.9,
        why="as IVF16,PQ12x4,RFlat, after a learned rotation",
    ),
    Backend(
        "faiss:IVF16,PQ12x4fsr,RFlat",
        spec("faiss:IVF16,PQ12x4fsr,RFlat"),
        0.9,
        why="4-bit PQ codes of the residuals, scanned in SIMD blocks (fast-scan), pick 4k candidates, "
        "re-scored exactly",
    ),
    Backend(
        "faiss:IVF16,PQ12x4fs,Refine(SQfp16)+k_factor=8",
        spec("faiss:IVF16,PQ12x4fs,Refine(SQfp16)", k_factor=8),
        0.85,
        score_error=2e-3,
        why="fast-scan codes of the vectors themselves (not residuals) pick 8k candidates, re-scored "
        "from float16",
    ),
    Backend(
        "faiss:PQ12x4fs,RFlat+k_factor=8",
        spec("faiss:PQ12x4fs,RFlat", k_factor=8),
        0.85,
        why="every fast-scan code scanned (no lists; no id selector, so filters post-filter), 8k re-scored",
    ),
    Backend(
        "faiss:IVF16,PQ24x4fsr",
        spec("faiss:IVF16,PQ24x4fsr"),
        0.75,
        score_error=None,
        why="12 bytes per vector and no refine: coarse by design; lists that delete but cannot give "
        "vectors back (exact fallbacks scan every code under the selector)",
    ),
    Backend(
        "faiss:PQ12x4",
        spec("faiss:PQ12x4"),
        0.3,
        score_error=None,
        why="6 bytes per vector and no refine: coarse by design; here for post-filtering",
    ),
    Backend(
        "faiss_ondisk:IVF16,Flat",
        spec("faiss_ondisk:IVF16,Flat"),
        0.95,
        why="as faiss:IVF16,Flat, its lists in a file",
    ),
    Backend(
        "faiss_ondisk:IVF16,PQ12",
        spec("faiss_ondisk:IVF16,PQ12"),
        0.8,
        score_error=None,
        why="12 bytes per vector (2 dimensions a byte) and no refine, its lists in a file",
    ),
    Backend("sharded:3:exact", spec("sharded:3:exact"), 1.0),
    Backend("sharded:2:faiss:HNSW16", spec("sharded:2:faiss:HNSW16"), 0.95, why="as faiss:HNSW16"),
    # Partitions by the suite's `category` (7 values): its filter pins two of them.
    Backend("sharded:by=category:exact", spec("sharded:by=category:exact"), 1.0),
    Backend(
        "sharded:by=category:faiss:HNSW16",
        spec("sharded:by=category:faiss:HNSW16"),
        0.95,
        why="as faiss:HNSW16",
    ),
    *milvus_backends(None),
    *milvus_backends("lite-server"),
    *milvus_backends("standalone"),
    Backend("mfli", spec("mfli"), 0.9, why="16 leaves of a 2-level codebook fitted on the first add"),
    Backend("mfli:facets=2,codewords=8", spec("mfli:facets=2,codewords=8"), 0.9, why="as mfli"),
    Backend("mfli:levels=3,codewords=8", spec("mfli:levels=3,codewords=8"), 0.9, why="as mfli"),
    Backend("mfli:storage=fp16", spec("mfli:storage=fp16"), 0.9, why="as mfli"),
    Backend(
        "mfli:storage=pq4",
        spec("mfli:storage=pq4"),
        0.9,
        why="as mfli; 4-bit PQ codes pick k x 8 candidates per facet, re-scored exactly",
    ),
    Backend(
        "uri+beam=every-leaf",
        uri(),
        1.0,
        why="a beam as wide as the tree scores every item",
        family="uri",
    ),
    Backend(
        "uri+beam=2",
        uri(beam=2),
        None,
        why="the decoder routes by what it learned on the bundle's catalogue, not these vectors",
        family="uri",
    ),
    Backend(
        "ci+nprobe=8",
        ci("ci", nprobe=8),
        0.9,
        why="8 of 32 lists probed (the default, 32, would probe them all); the items the bundle knows "
        "are placed by its query views of them",
        family="sci",
    ),
    Backend(
        "ci:coarse=items+queries+nprobe=8",
        ci("ci:coarse=items+queries", logged_queries=True, nprobe=8),
        0.9,
        why="as ci, with lists clustered on logged queries too",
        family="sci",
    ),
    Backend(
        "ci:place=item,assign=2+nprobe=8",
        ci("ci:place=item,assign=2", nprobe=8),
        0.9,
        why="as ci, each item in the 2 lists its vector scores best",
        family="sci",
    ),
    Backend(
        "ci:compress=pq4+nprobe=8",
        ci("ci:compress=pq4", nprobe=8),
        0.9,
        why="as ci; the lists' 4-bit PQ codes pick k x 8 candidates, re-scored exactly",
        family="sci",
    ),
    Backend(
        "ci+nprobe=8,fine=rq",
        ci("ci", nprobe=8, fine="rq"),
        0.4,
        score_error=None,
        why="scored by residual codes (2 levels x 256 codewords) without exact rescoring",
        family="sci",
    ),
]
BY_NAME = {backend.name: backend for backend in BACKENDS}
