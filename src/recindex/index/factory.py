"""Build an index from a backend spec string, and load any saved index from its manifest.

Specs (the `--backend` of `recindex index build`):

    exact                      float32 storage; `exact:float16`, `exact:int8` for less memory
    faiss:HNSW32               any FAISS index-factory string after the colon, e.g.
    faiss:IVF4096,Flat         faiss:IVF4096,PQ32x8,RFlat (PQ with an exact refine stage),
    faiss:OPQ16,IVF1024,PQ16   ...
    faiss_ondisk:IVF4096,PQ16  an IVF index whose inverted lists live in a file (faiss_ondisk.py)
    milvus:HNSW                a Milvus index type (HNSW, IVF_FLAT, IVF_PQ, FLAT, AUTOINDEX, ...);
                               the server or Milvus Lite file comes from options["uri"]
    sharded:4:faiss:HNSW32     4 shards of the inner spec, by hash of item id
    sharded:by=region:faiss:HNSW32
                               one partition of the inner spec per value of the item attribute
                               `region` (index/partitioned.py)

A spec string is read into its backend's typed spec (`recindex.index.specs`); build options are more
values of that spec's fields, or material a backend takes from elsewhere (a trained model's parts).

The learned indexes of the families (`mfli`, `uri`, `ci`) join this table in the composition root
(`recindex.pipelines.indexes`), which passes the whole table to `make_index` and `load_index`: this
package knows no family. Backends are named in tables explicitly; nothing is discovered by module name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recindex.errors import InvalidRequest
from recindex.index.base import BaseIndex, Metric, read_index_manifest
from recindex.index.exact_index import ExactIndex
from recindex.index.faiss_index import FaissIndex
from recindex.index.faiss_ondisk import OnDiskFaissIndex
from recindex.index.partitioned import PartitionedIndex
from recindex.index.sharded import ShardedIndex
from recindex.index.specs import CORE_SPECS, IndexSpec, ShardedSpec, parse_spec


@dataclass(frozen=True)
class Backend:
    """One entry of a backend table: its typed spec, how a spec makes an empty index, and how a saved
    one is read back (both get the whole table, for backends that hold other backends)."""

    name: str
    spec: type[IndexSpec]
    index_class: Callable[[], type[BaseIndex]]  # a function, so an optional engine is imported on use
    # (spec, dim, metric, search_params, material, backends) -> index; None: the index class called
    # with the spec's fields and the material
    make: Callable[..., BaseIndex] | None = None
    load: Callable[[Path, dict, Mapping[str, Backend]], BaseIndex] | None = None
    # constructor arguments that are no setting of the spec: what a bundle gives (a trained codebook,
    # decoder weights) or a secret (a token); they pass through untyped
    material: tuple[str, ...] = ()


Backends = Mapping[str, "Backend"]


def _milvus_class() -> type[BaseIndex]:
    # pymilvus is an optional extra: only those who use the Milvus backend need it installed.
    from recindex.index.milvus_index import MilvusIndex

    return MilvusIndex


def _make_sharded(spec: ShardedSpec, dim, metric, search_params, options, backends) -> BaseIndex:
    if spec.by:
        return _partitioned(spec.by, spec.inner, dim, metric, search_params, options, backends)
    shards = [
        make_index(
            spec.inner,
            dim,
            metric,
            search_params=search_params,
            options=_shard_options(spec.inner, options, n),
            backends=backends,
        )
        for n in range(spec.shards)
    ]
    return ShardedIndex(shards, spec=spec.inner)


def _partitioned(by, inner, dim, metric, search_params, options, backends) -> PartitionedIndex:
    def make_partition() -> BaseIndex:
        return make_index(inner, dim, metric, search_params=search_params, options=options, backends=backends)

    return PartitionedIndex(by, make_partition, spec=inner, options=options)


def _load_sharded(folder: Path, manifest: dict, backends: Backends) -> BaseIndex:
    state = manifest["state"]
    shards = [load_index(folder / f"shard_{n}", backends) for n in range(state["shards"])]
    if state.get("by"):
        first = shards[0]
        index = _partitioned(
            state["by"],
            state["spec"],
            first.dim,
            first.metric,
            first.search_params,
            state["options"],
            backends,
        )
        index.restore(shards, state, folder)
    else:
        index = ShardedIndex(shards, state["spec"])
    index.search_params = index.resolve_params(manifest.get("search_params"))
    return index


CORE_BACKENDS: dict[str, Backend] = {
    "exact": Backend("exact", CORE_SPECS["exact"], lambda: ExactIndex),
    "faiss": Backend("faiss", CORE_SPECS["faiss"], lambda: FaissIndex),
    "faiss_ondisk": Backend("faiss_ondisk", CORE_SPECS["faiss_ondisk"], lambda: OnDiskFaissIndex),
    "milvus": Backend("milvus", CORE_SPECS["milvus"], _milvus_class, material=("token",)),
    "sharded": Backend("sharded", CORE_SPECS["sharded"], lambda: ShardedIndex, _make_sharded, _load_sharded),
}


def backend_of(name: str, backends: Backends = CORE_BACKENDS) -> Backend:
    if name not in backends:
        raise InvalidRequest(f"unknown index backend {name!r}; choose one of {', '.join(backends)}")
    return backends[name]


def spec_table(backends: Backends) -> dict[str, type[IndexSpec]]:
    """Backend name -> its spec class, for reading spec strings and config tables."""
    return {name: backend.spec for name, backend in backends.items()}


def make_index(
    spec: str | IndexSpec,
    dim: int,
    metric: Metric = "ip",
    *,
    search_params: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    backends: Backends = CORE_BACKENDS,
) -> BaseIndex:
    """An empty index for `spec` (a string or a typed spec); `options` are build-time settings of the
    backend (its spec's fields) or the material it takes."""
    parsed = spec if isinstance(spec, IndexSpec) else parse_spec(spec, spec_table(backends))
    backend = backend_of(parsed.NAME, backends)
    options = dict(options or {})
    material = options
    if not isinstance(parsed, ShardedSpec):  # a sharded index hands its options to its shards
        parsed, material = with_options(parsed, backend, options)
    parsed.check()
    if backend.make is not None:
        return backend.make(parsed, dim, metric, search_params, material, backends)
    return backend.index_class()(dim, metric, search_params=search_params, **parsed.arguments(), **material)


def with_options(spec: IndexSpec, backend: Backend, options: Mapping[str, Any]) -> tuple[IndexSpec, dict]:
    """(the spec with the options that are its fields, the material); refuses any other option."""
    settings = {k: v for k, v in options.items() if k not in backend.material}
    unknown = sorted(set(settings) - set(spec.field_names()))
    if unknown:
        takes = ", ".join([*spec.field_names(), *backend.material]) or "none"
        raise InvalidRequest(f"{backend.name} index: unknown options {unknown} (it takes: {takes})")
    material = {k: v for k, v in options.items() if k in backend.material}
    return type(spec).from_values(settings, f"{backend.name} index options", spec), material


def _shard_options(inner: str, options: dict, number: int) -> dict:
    """Milvus shards are separate collections; other backends need nothing per shard."""
    if inner.startswith("milvus"):
        return {**options, "collection": f"{options.get('collection', 'recindex_items')}_shard{number}"}
    return options


def load_index(path: str | Path, backends: Backends = CORE_BACKENDS) -> BaseIndex:
    """Load a saved index of any backend in `backends`, after checking its manifest and checksums."""
    path = Path(path)
    manifest = read_index_manifest(path)
    backend = backend_of(manifest["backend"], backends)
    if backend.load is not None:
        return backend.load(path, manifest, backends)
    return backend.index_class().from_manifest(path, manifest)
