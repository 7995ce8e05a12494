"""Typed index specs: spec strings and [index] tables read through each backend's fields."""

import dataclasses
from typing import ClassVar, get_args, get_type_hints

import pytest

from recindex.config import from_dict, load_config
from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.exact_index import STORAGES as EXACT_STORAGES
from recindex.index.specs import ExactSpec, FaissSpec, IndexSpec, MilvusSpec, ShardedSpec, parse_spec
from recindex.mfli.lists import STORAGES as MFLI_STORAGES
from recindex.pipelines.indexes import SPECS, CISpec, MFLISpec, URISpec, check_index, make_index
from recindex.sci.index import COARSE, PLACE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exact", ExactSpec()),
        ("exact:int8", ExactSpec(storage="int8")),
        ("faiss:IVF16,PQ12x4,RFlat", FaissSpec(factory="IVF16,PQ12x4,RFlat")),
        ("milvus", MilvusSpec()),
        ("milvus:HNSW", MilvusSpec(index_type="HNSW")),
        ("sharded:4:faiss:HNSW32", ShardedSpec(shards=4, inner="faiss:HNSW32")),
        ("mfli:facets=3,levels=2,codewords=64", MFLISpec(facets=3, levels=2, codewords=64)),
        ("mfli:storage=fp16,max_leaf=500", MFLISpec(storage="fp16", max_leaf=500)),
        ("uri", URISpec()),
        ("ci:nlist=8,levels=1,codewords=8", CISpec(nlist=8, levels=1, codewords=8)),
        ("ci:coarse=items+queries,place=item", CISpec(coarse="items+queries", place="item")),
    ],
)
def test_spec_strings_read_into_their_backends_typed_spec(text, expected):
    spec = parse_spec(text, SPECS)
    assert spec == expected
    assert parse_spec(spec.text(), SPECS) == spec  # the string a typed spec writes reads back the same


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exact:int4", "'exact:int4': storage: 'int4' is not one of 'float32', 'float16', 'int8'"),
        ("ci:coarse=users", "coarse: 'users' is not one of 'items', 'items\\+queries'"),
        ("ci:place=users", "place: 'users' is not one of 'query', 'item'"),
        ("ci:nlist=many", "nlist: expected int, got 'many'"),
        ("ci:nlist=-1", "nlist must be 0 or more"),
        ("ci:nprobe=3", "unknown key 'nprobe'; expected one of nlist, levels, codewords, assign, coarse"),
        ("ci:levels", "expected nlist=VALUE,.*got 'levels'"),
        ("mfli:depth=3", "unknown key 'depth'; expected one of facets, levels, codewords"),
        ("mfli:storage=int3", "storage: 'int3' is not one of 'flat', 'fp16'"),
        ("mfli:levels=2.5", "levels: expected int, got 2.5"),
        ("uri:k=3", "unknown key 'k'; expected one of compress, code_dims"),
        ("sharded:x:exact", "sharded:N:INNER .*'sharded:x:exact'"),
        ("sharded:2:exact:int4", "storage: 'int4'"),
        (
            "foo:bar",
            "unknown index backend 'foo'; choose one of "
            "exact, faiss, faiss_ondisk, milvus, sharded, mfli, uri",
        ),
        ("", "non-empty string"),
    ],
)
def test_a_wrong_key_or_value_is_refused_naming_what_is_allowed(text, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_spec(text, SPECS)


def test_a_spec_that_cannot_make_an_index_is_refused_when_made():
    with pytest.raises(InvalidRequest, match="faiss needs a factory string"):
        make_index("faiss", 8)
    with pytest.raises(InvalidRequest, match="sharded needs shards >= 1"):
        make_index("sharded", 8)


def test_build_options_are_typed_fields_of_the_spec_or_a_backends_material():
    assert make_index("faiss:HNSW16", 8, options={"ef_construction": 40}).ef_construction == 40
    assert make_index("ci:nlist=4", 8, options={"place": "item"}).place == "item"
    with pytest.raises(InvalidRequest, match=r"unknown options \['efc'\] \(it takes: factory, ef_constr"):
        make_index("faiss:HNSW16", 8, options={"efc": 3})
    with pytest.raises(InvalidRequest, match="ef_construction: expected int, got 'wide'"):
        make_index("faiss:HNSW16", 8, options={"ef_construction": "wide"})
    with pytest.raises(InvalidRequest, match="place: 'users' is not one of"):
        make_index("ci", 8, options={"place": "users"})


def test_a_typed_spec_makes_the_index_its_fields_describe():
    index = make_index(CISpec(nlist=4, levels=1, codewords=8, assign=2), 8)
    assert (index.nlist, index.levels, index.codewords, index.assign) == (4, 1, 8, 2)
    assert make_index(ExactSpec(storage="float16"), 8).storage == "float16"
    assert make_index(ShardedSpec(shards=3, inner="exact"), 8).capabilities.upsert


def test_the_specs_choices_are_the_index_classes_own():
    def choices(spec, field):
        return get_args(get_type_hints(spec)[field])

    assert choices(ExactSpec, "storage") == EXACT_STORAGES
    assert choices(MFLISpec, "storage") == MFLI_STORAGES
    assert choices(CISpec, "coarse") == COARSE and choices(CISpec, "place") == PLACE


def test_index_section_tables_are_typed_and_the_backend_reads_over_its_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[index]\nbackend = "ci:levels=1"\nsearch = { nprobe = 4 }\n'
        '[index.ci]\nnlist = 8\ncoarse = "items+queries"\n[index.faiss]\nfactory = "HNSW32"\n'
    )
    config = load_config(path, ["index.ci.codewords=16"], check_index)
    assert config.index.search == {"nprobe": 4}
    assert config.index.backends == {
        "ci": {"nlist": 8, "coarse": "items+queries", "codewords": 16},
        "faiss": {"factory": "HNSW32"},
    }
    spec = parse_spec(config.index.backend, SPECS, config.index.backends)
    assert spec == CISpec(nlist=8, levels=1, codewords=16, coarse="items+queries")
    assert from_dict(config.to_dict(), check_index=check_index) == config  # a manifest's config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (['index.ci.nlist="many"'], "config \\[index.ci\\]: nlist: expected int, got 'many'"),
        (["index.ci.nprobe=4"], "config \\[index.ci\\]: unknown key 'nprobe'; expected one of nlist"),
        (['index.exact.storage="int4"'], "storage: 'int4' is not one of 'float32', 'float16', 'int8'"),
        (["index.annoy.trees=8"], "\\[index.annoy\\] is no index backend; the tables are exact, faiss"),
        (['index.backend="ci:nlist=x"'], "config \\[index\\] backend: 'ci:nlist=x': nlist: expected int"),
        (['index.backend="hnswlib"'], "unknown index backend 'hnswlib'"),
        (["index.backend=3"], "expected str, got 3"),
        (["index.search={ef=[1]}"], "ef: expected int or float or str or bool"),
        (["index.colour=3"], "unknown key 'colour'; valid: backend, search"),
        (["index.ci.nlist=8.5"], "nlist: expected int, got 8.5"),
    ],
)
def test_a_bad_index_section_is_refused_when_the_config_is_read(settings, message):
    with pytest.raises(RecIndexError, match=message):
        load_config(None, settings, check_index)


def test_configs_without_an_index_section_read_as_no_index():
    config = from_dict({"model": {"dim": 8}}, check_index=check_index)
    assert config.index.backend == "" and config.index.backends == {} and config.index.search == {}
    assert config.to_dict()["index"] == {
        "backend": "",
        "search": {},
        "check_queries": 500,
        "warn_recall": 0.9,
        "min_recall": 0.0,
    }


def test_a_backend_without_settings_says_it_takes_none():
    @dataclasses.dataclass(frozen=True)
    class BareSpec(IndexSpec):
        NAME: ClassVar[str] = "bare"

    with pytest.raises(InvalidRequest, match="the bare backend takes no spec options"):
        BareSpec.from_text("k=3", "'bare:k=3'")
