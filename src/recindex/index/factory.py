"""Build an index from a backend spec string, and load any saved index from its manifest.

Specs (the `--backend` of `recindex index build`):

    exact                      float32 storage; `exact:float16`, `exact:int8` for less memory
    faiss:HNSW32               any FAISS index-factory string after the colon, e.g.
    faiss:IVF4096,Flat         faiss:IVF4096,PQ32x8,RFlat (PQ with an exact refine stage),
    faiss:OPQ16,IVF1024,PQ16   ...
    milvus:HNSW                a Milvus index type (HNSW, IVF_FLAT, IVF_PQ, FLAT, AUTOINDEX, ...);
                               the server or Milvus Lite file comes from options["uri"]
    sharded:4:faiss:HNSW32     4 shards of the inner spec, by hash of item id
    mfli                       the multifaceted learnable index served by walking codes; its shape as
    mfli:facets=3,levels=2,codewords=64   options (a trained codebook comes in options["codebook"]);
    mfli:storage=fp16,max_leaf=500        also the leaves' vector storage and the rebuild bounds
    uri                        a URI (generative) model's decoder, beam search over its learned token tree
                               and its ranker; its weights and codes come in options (from the bundle)
    ci                         SCI's consistent index: lists by k-means in the query view, scores (exact,
    ci:nlist=128,levels=2      or residual codes) in the item view; the items' query views and logged
    ci:coarse=items+queries    queries come in options, from the bundle; also codewords=N, assign=N,
    ci:place=item              and place=query|item (which view picks an item's list)

Backends are named here explicitly; nothing is discovered by module name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recindex.errors import InvalidRequest
from recindex.index.base import BaseIndex, Metric, read_index_manifest

BACKENDS = ("exact", "faiss", "milvus", "sharded", "mfli", "uri", "ci")


def backend_class(name: str) -> type[BaseIndex]:
    # Imported on demand so that a missing optional engine only matters to those who use it.
    if name == "exact":
        from recindex.index.exact_index import ExactIndex

        return ExactIndex
    if name == "faiss":
        from recindex.index.faiss_index import FaissIndex

        return FaissIndex
    if name == "milvus":
        from recindex.index.milvus_index import MilvusIndex

        return MilvusIndex
    if name == "sharded":
        from recindex.index.sharded import ShardedIndex

        return ShardedIndex
    if name == "mfli":
        from recindex.mfli.index import MFLIIndex

        return MFLIIndex
    if name == "uri":
        from recindex.uri.index import URIIndex

        return URIIndex
    if name == "ci":
        from recindex.sci.index import CIIndex

        return CIIndex
    raise InvalidRequest(f"unknown index backend {name!r}; choose one of {', '.join(BACKENDS)}")


def make_index(
    spec: str,
    dim: int,
    metric: Metric = "ip",
    *,
    search_params: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> BaseIndex:
    """An empty index for `spec`; `options` are build-time settings of the backend."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidRequest("an index spec is a non-empty string such as 'exact' or 'faiss:HNSW32'")
    backend, _, rest = spec.strip().partition(":")
    options = dict(options or {})
    cls = backend_class(backend)
    _check_options(cls, backend, options)
    if backend == "exact":
        return cls(dim, metric, storage=rest or "float32", search_params=search_params, **options)
    if backend == "faiss":
        if not rest:
            raise InvalidRequest("faiss needs a factory string, e.g. faiss:HNSW32 or faiss:IVF1024,Flat")
        return cls(dim, metric, factory=rest, search_params=search_params, **options)
    if backend == "milvus":
        return cls(dim, metric, index_type=rest or "AUTOINDEX", search_params=search_params, **options)
    if backend == "mfli":
        shape = _key_values(
            spec, rest, ("facets", "levels", "codewords", "min_leaf", "max_leaf"), words=("storage",)
        )
        _check_options(cls, backend, {**shape, **options})
        return cls(dim, metric, search_params=search_params, **{**shape, **options})
    if backend == "uri":
        if rest:
            raise InvalidRequest(
                f"{spec!r}: the uri backend takes no spec options (its shape is the model's)"
            )
        return cls(dim, metric, search_params=search_params, **options)
    if backend == "ci":
        shape = _key_values(
            spec, rest, ("nlist", "levels", "codewords", "assign", "seed"), words=("coarse", "place")
        )
        _check_options(cls, backend, {**shape, **options})
        return cls(dim, metric, search_params=search_params, **{**shape, **options})
    count, _, inner = rest.partition(":")
    if not count.isdigit() or not inner:
        raise InvalidRequest(f"sharded spec is sharded:N:INNER (e.g. sharded:4:faiss:HNSW32), got {spec!r}")
    shards = [
        make_index(inner, dim, metric, search_params=search_params, options=_shard_options(inner, options, n))
        for n in range(int(count))
    ]
    return cls(shards, spec=inner)


def _key_values(
    spec: str, text: str, keys: tuple[str, ...], words: tuple[str, ...] = ()
) -> dict[str, int | str]:
    """`key=N,...` pairs; keys in `words` take a word instead of a number."""
    values: dict[str, int | str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in keys + words or (key in keys and not value.isdigit()) or not value:
            expected = ",".join([f"{k}=N" for k in keys] + [f"{w}=WORD" for w in words])
            raise InvalidRequest(f"{spec!r}: expected {expected} (any of them), got {part!r}")
        values[key] = int(value) if key in keys else value
    return values


def _check_options(cls: type[BaseIndex], backend: str, options: dict) -> None:
    if backend == "sharded":
        return  # the inner backend checks them
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


def load_index(path: str | Path) -> BaseIndex:
    """Load a saved index of any backend, after checking its manifest and checksums."""
    path = Path(path)
    manifest = read_index_manifest(path)
    return backend_class(manifest["backend"]).from_manifest(path, manifest)
