"""The search parameter each Milvus index type takes, its default, and how far a retry may widen it.

Milvus (2.3 / 2.4 index docs) tunes a search with one parameter per index type:

- `nprobe`, lists probed, at most `nlist`: the IVF types (IVF_FLAT, IVF_SQ8, IVF_PQ, and later
  IVF_* types), GPU_IVF_FLAT, GPU_IVF_PQ and SCANN;
- `ef`, the graph's candidate list, at least k: HNSW (and the HNSW_* types of later versions);
- `search_list`, DiskANN's candidate list, at least k: DISKANN (Milvus 2.3 also caps it at 200 for
  k <= 20 and at min(10 k, 65535) above; later versions at int32 max: the 2.3 cap holds for both);
- nothing: FLAT, GPU_BRUTE_FORCE (exact) and AUTOINDEX (Milvus chooses).

An index type missing from the table (GPU_CAGRA, whose `itopk_size` Milvus bounds in ways this backend
does not check) is searched at the server's settings and takes no search parameter here. A MilvusIndex
offers exactly its type's parameter, so one the type has no use for is refused (BaseIndex.resolve_params)
rather than sent and ignored.
"""

from __future__ import annotations

from typing import Any

# index type (exact name, or the family a name starts with) -> the search parameter it takes
EXACT = {
    "FLAT": None,
    "GPU_BRUTE_FORCE": None,
    "AUTOINDEX": None,
    "GPU_IVF_FLAT": "nprobe",
    "GPU_IVF_PQ": "nprobe",
    "SCANN": "nprobe",
    "DISKANN": "search_list",
}
FAMILIES = {"IVF": "nprobe", "HNSW": "ef"}
DEFAULTS = {"nprobe": 16, "ef": 64, "search_list": 64}
# Retries widen by RETRY_GROWTH (search.py) up to these; nprobe also to the index's nlist.
MAX_EF, MAX_NPROBE = 32_768, 65_536


def search_parameter(index_type: str) -> str | None:
    """The search parameter `index_type` takes; None where it takes none (or is not in the table)."""
    index_type = index_type.upper()
    if index_type in EXACT:
        return EXACT[index_type]
    return next((name for family, name in FAMILIES.items() if index_type.startswith(family)), None)


def search_defaults(index_type: str) -> dict[str, Any]:
    """The search parameters a MilvusIndex of `index_type` offers, with their defaults."""
    name = search_parameter(index_type)
    return {} if name is None else {name: DEFAULTS[name]}


def ann_params(index_type: str, build_params: dict, params: dict, k: int, growth: int) -> dict:
    """Milvus's search parameters for one search: the type's parameter from `params`, times `growth`
    (a retry's widening), within Milvus's range for it; {} where the type has none to tune."""
    name = search_parameter(index_type)
    if name is None:
        return {}
    if name == "nprobe":
        nlist = int(build_params.get("nlist", MAX_NPROBE))
        return {"nprobe": min(int(params["nprobe"]) * growth, nlist, MAX_NPROBE)}
    # ef and search_list are candidate lists, which Milvus requires to hold at least k
    ceiling = MAX_EF if name == "ef" else search_list_ceiling(k)
    return {name: min(max(int(params[name]), k) * growth, ceiling)}


def search_list_ceiling(k: int) -> int:
    """The largest DiskANN search_list Milvus 2.3 takes for a top-k search (never below k)."""
    return 200 if k <= 20 else max(k, min(10 * k, 65_535))
