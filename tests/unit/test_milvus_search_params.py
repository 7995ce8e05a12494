"""Which search parameter each Milvus index type gets (milvus.search_params), how far a retry widens
it, and that a MilvusIndex refuses a parameter its index type has no use for. No Milvus is reached:
the index is never added to."""

from __future__ import annotations

import json

import pytest

from recindex.errors import InvalidRequest
from recindex.index.milvus.schema import vector_field
from recindex.index.milvus.search import ann_params
from recindex.index.milvus.search_params import MAX_EF, search_list_ceiling
from recindex.index.milvus_index import MilvusIndex

PARAMS = {"nprobe": 16, "ef": 64, "search_list": 64}


def params_for(index_type: str, k: int = 10, growth: int = 1, **build) -> dict:
    return ann_params(vector_field(16, "ip", index_type, build or None), PARAMS, k, growth)


@pytest.mark.parametrize(
    ("index_type", "expected"),
    [
        ("IVF_FLAT", {"nprobe": 16}),
        ("IVF_SQ8", {"nprobe": 16}),
        ("IVF_PQ", {"nprobe": 16}),
        ("GPU_IVF_FLAT", {"nprobe": 16}),
        ("GPU_IVF_PQ", {"nprobe": 16}),
        ("SCANN", {"nprobe": 16}),
        ("scann", {"nprobe": 16}),
        ("HNSW", {"ef": 64}),
        ("DISKANN", {"search_list": 64}),
        ("FLAT", {}),
        ("GPU_BRUTE_FORCE", {}),
        ("AUTOINDEX", {}),
    ],
)
def test_each_index_type_gets_its_own_search_parameter(index_type, expected):
    assert params_for(index_type) == expected


def test_widening_stays_within_what_milvus_takes():
    assert params_for("SCANN", growth=16, nlist=128) == {"nprobe": 128}  # at most nlist
    assert params_for("GPU_IVF_PQ", growth=4, nlist=1024) == {"nprobe": 64}
    assert params_for("HNSW", k=100, growth=4) == {"ef": 400}  # from k, as Milvus needs ef >= k
    assert params_for("HNSW", k=5_000, growth=16) == {"ef": MAX_EF}
    assert params_for("DISKANN", k=100, growth=4) == {"search_list": 400}
    assert params_for("DISKANN", k=100, growth=16) == {"search_list": 1_000}  # 2.3: at most 10 k
    assert params_for("DISKANN", k=10, growth=16) == {"search_list": 200}  # 2.3: at most 200 for k <= 20
    for k in (1, 20, 21, 100, 7_000, 16_384):
        assert k <= search_list_ceiling(k) <= 65_535


@pytest.mark.parametrize(
    ("index_type", "offered"),
    [
        ("HNSW", {"ef": 64}),
        ("IVF_PQ", {"nprobe": 16}),
        ("SCANN", {"nprobe": 16}),
        ("DISKANN", {"search_list": 64}),
        ("FLAT", {}),
        ("AUTOINDEX", {}),
    ],
)
def test_an_index_offers_its_types_parameter_alone(index_type, offered, tmp_path):
    index = MilvusIndex(16, "ip", index_type, uri=tmp_path / "items.db")
    assert index.search_params == offered


@pytest.mark.parametrize(
    ("index_type", "unused"),
    [
        ("HNSW", "nprobe"),
        ("IVF_FLAT", "ef"),
        ("GPU_IVF_FLAT", "ef"),
        ("DISKANN", "nprobe"),
        ("FLAT", "nprobe"),
    ],
)
def test_a_parameter_the_type_has_no_use_for_is_refused(index_type, unused, tmp_path):
    with pytest.raises(InvalidRequest, match=rf"unknown search parameters \['{unused}'\]"):
        MilvusIndex(16, "ip", index_type, uri=tmp_path / "items.db", search_params={unused: 8})
    index = MilvusIndex(16, "ip", index_type, uri=tmp_path / "items.db")
    with pytest.raises(InvalidRequest, match=rf"unknown search parameters \['{unused}'\]"):
        index.resolve_params({unused: 8}, merge=False)


def test_an_index_saved_with_every_types_parameters_loads_with_its_own(tmp_path):
    # Manifests written before search parameters followed the index type list ef and nprobe for all.
    index = MilvusIndex(16, "ip", "HNSW", uri=tmp_path / "items.db", search_params={"ef": 100})
    index.save(tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / "manifest.json").read_text())
    assert manifest["search_params"] == {"ef": 100}
    manifest["search_params"] = {"ef": 100, "nprobe": 16}
    loaded = MilvusIndex.from_manifest(tmp_path / "saved", manifest)
    assert loaded.search_params == {"ef": 100}


@pytest.mark.parametrize(
    ("index_type", "defaults"),
    [
        ("IVF_PQ", {"nlist": 128}),
        ("SCANN", {"nlist": 128}),
        ("GPU_IVF_FLAT", {"nlist": 128}),
        ("HNSW", {"M": 16, "efConstruction": 200}),
        ("DISKANN", {}),
        ("FLAT", {}),
    ],
)
def test_build_defaults_follow_the_search_parameter(index_type, defaults):
    # Milvus refuses to build the types searched with nprobe without an nlist.
    assert vector_field(16, "ip", index_type, None).params == defaults
    assert vector_field(16, "ip", index_type, {"extra": 1}).params == {**defaults, "extra": 1}
