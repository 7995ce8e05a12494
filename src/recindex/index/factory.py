"""Build an index from a backend spec string, and load any saved index from its manifest.

Specs (the `--backend` of `recindex index build`):

    exact                      float32 storage; `exact:float16`, `exact:int8` for less memory
    faiss:HNSW32               any FAISS index-factory string after the colon, e.g.
    faiss:IVF4096,Flat         faiss:IVF4096,PQ32x8,RFlat (PQ with an exact refine stage),
    faiss:OPQ16,IVF1024,PQ16   ...
    milvus:HNSW                a Milvus index type (HNSW, IVF_FLAT, IVF_PQ, FLAT, AUTOINDEX, ...);
                               the server or Milvus Lite file comes from options["uri"]
    sharded:4:faiss:HNSW32     4 shards of the inner spec, by hash of item id

The learned indexes of the families (`mfli`, `uri`, `ci`) join this table in the composition root
(`recindex.pipelines.indexes`), which passes the whole table to `make_index` and `load_index`: this
package knows no family. Backends are named in tables explicitly; nothing is discovered by module name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recindex.errors import InvalidRequest
from recindex.index.base import BaseIndex, Metric, read_index_manifest
from recindex.index.exact_index import ExactIndex
from recindex.index.faiss_index import FaissIndex
from recindex.index.sharded import ShardedIndex


@dataclass(frozen=True)
class Backend:
    """One entry of a backend table: how a spec's text after `NAME:` makes an empty index, and how a
    saved one is read back (both get the whole table, for backends that hold other backends)."""

    name: str
    index_class: Callable[[], type[BaseIndex]]  # a function, so an optional engine is imported on use
    make: Callable[..., BaseIndex]  # (rest, dim, metric, search_params, options, backends) -> index
    load: Callable[[Path, dict, Mapping[str, Backend]], BaseIndex] | None = None


Backends = Mapping[str, "Backend"]


def _milvus_class() -> type[BaseIndex]:
    # pymilvus is an optional extra: only those who use the Milvus backend need it installed.
    from recindex.index.milvus_index import MilvusIndex

    return MilvusIndex


def _make_exact(rest, dim, metric, search_params, options, backends) -> BaseIndex:
    return ExactIndex(dim, metric, storage=rest or "float32", search_params=search_params, **options)


def _make_faiss(rest, dim, metric, search_params, options, backends) -> BaseIndex:
    if not rest:
        raise InvalidRequest("faiss needs a factory string, e.g. faiss:HNSW32 or faiss:IVF1024,Flat")
    return FaissIndex(dim, metric, factory=rest, search_params=search_params, **options)


def _make_milvus(rest, dim, metric, search_params, options, backends) -> BaseIndex:
    milvus = _milvus_class()
    return milvus(dim, metric, index_type=rest or "AUTOINDEX", search_params=search_params, **options)


def _make_sharded(rest, dim, metric, search_params, options, backends) -> BaseIndex:
    count, _, inner = rest.partition(":")
    if not count.isdigit() or not inner:
        spec = f"sharded:{rest}"
        raise InvalidRequest(f"sharded spec is sharded:N:INNER (e.g. sharded:4:faiss:HNSW32), got {spec!r}")
    shards = [
        make_index(
            inner,
            dim,
            metric,
            search_params=search_params,
            options=_shard_options(inner, options, n),
            backends=backends,
        )
        for n in range(int(count))
    ]
    return ShardedIndex(shards, spec=inner)


def _load_sharded(folder: Path, manifest: dict, backends: Backends) -> BaseIndex:
    state = manifest["state"]
    shards = [load_index(folder / f"shard_{n}", backends) for n in range(state["shards"])]
    index = ShardedIndex(shards, state["spec"])
    index.search_params = index.resolve_params(manifest.get("search_params"))
    return index


CORE_BACKENDS: dict[str, Backend] = {
    "exact": Backend("exact", lambda: ExactIndex, _make_exact),
    "faiss": Backend("faiss", lambda: FaissIndex, _make_faiss),
    "milvus": Backend("milvus", _milvus_class, _make_milvus),
    "sharded": Backend("sharded", lambda: ShardedIndex, _make_sharded, _load_sharded),
}


def backend_of(name: str, backends: Backends = CORE_BACKENDS) -> Backend:
    if name not in backends:
        raise InvalidRequest(f"unknown index backend {name!r}; choose one of {', '.join(backends)}")
    return backends[name]


def make_index(
    spec: str,
    dim: int,
    metric: Metric = "ip",
    *,
    search_params: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    backends: Backends = CORE_BACKENDS,
) -> BaseIndex:
    """An empty index for `spec`; `options` are build-time settings of the backend."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidRequest("an index spec is a non-empty string such as 'exact' or 'faiss:HNSW32'")
    name, _, rest = spec.strip().partition(":")
    backend = backend_of(name, backends)
    options = dict(options or {})
    if name != "sharded":  # the inner backend checks them
        check_options(backend.index_class(), name, options)
    return backend.make(rest, dim, metric, search_params, options, backends)


def key_values(
    spec: str, text: str, keys: tuple[str, ...], words: tuple[str, ...] = ()
) -> dict[str, int | str]:
    """`key=N,...` pairs of a spec; keys in `words` take a word instead of a number."""
    values: dict[str, int | str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in keys + words or (key in keys and not value.isdigit()) or not value:
            expected = ",".join([f"{k}=N" for k in keys] + [f"{w}=WORD" for w in words])
            raise InvalidRequest(f"{spec!r}: expected {expected} (any of them), got {part!r}")
        values[key] = int(value) if key in keys else value
    return values


def check_options(cls: type[BaseIndex], backend: str, options: dict) -> None:
    """Refuse build options the backend's constructor does not take, naming the ones it does."""
    accepted = [
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "search_params"
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidRequest(
            f"{backend} index: unknown options {unknown} (it takes: {', '.join(accepted) or 'none'})"
        )


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
