"""The memory planner: its byte formulas against real indexes, its build-time extrapolation, its
recommendation, and `recindex plan`'s input checks and output."""

from __future__ import annotations

import ctypes
import json
import tracemalloc
from dataclasses import replace

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import InvalidRequest
from recindex.index.build_time import RATES_FILE, RateTable, work_units
from recindex.index.factory import make_index
from recindex.index.footprint import HASH_ENTRY_BYTES, index_footprint, python_dict_bytes
from recindex.index.planning import candidate_specs, ivf_nlist, plan

DIM, N = 32, 12_000
VECTORS = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)


@pytest.mark.parametrize(
    "spec",
    [
        "faiss:Flat",
        "faiss:HNSW16",
        "faiss:HNSW32",
        "faiss:IVF64,Flat",
        "faiss:IVF64,PQ8",
        "faiss:IVF64,SQ8",
        "faiss:OPQ8,IVF64,PQ8",
        "faiss:IVF64,PQ8,RFlat",
        "faiss:PQ8",
        "faiss:HNSW16,SQ8",
        "faiss:IVF64,PQ16x4fs",
    ],
)
def test_faiss_formulas_match_the_serialized_index(spec):
    index = make_index(spec, DIM)
    predicted = index_footprint(make_index(spec, DIM), N).serialized()
    index.add(np.arange(N), VECTORS)
    real = len(faiss.serialize_index(index.index))
    assert abs(predicted - real) <= 0.02 * real, f"{spec}: formula {predicted:,.0f} B, serialized {real:,} B"


def test_on_disk_lists_are_counted_on_disk_and_match_the_list_contents(tmp_path):
    index = make_index("faiss_ondisk:IVF64,PQ8", DIM, options={"work_dir": str(tmp_path)})
    footprint = index_footprint(make_index("faiss_ondisk:IVF64,PQ8", DIM), N)
    index.add(np.arange(N), VECTORS)
    ivf = faiss.extract_index_ivf(index.index)
    used = sum(ivf.invlists.list_size(c) for c in range(ivf.nlist)) * (ivf.code_size + 8)
    assert footprint.disk() == pytest.approx(used)
    in_ram = index_footprint(make_index("faiss:IVF64,PQ8", DIM), N).ram()
    assert footprint.ram() == pytest.approx(in_ram - used, rel=0.01)
    # index.faiss of an on-disk index holds the structure, not the lists; its list table also keeps a
    # record of each free stretch of the file, as many as the lists' reallocations left (not modelled)
    slack = 0.02 * footprint.serialized() + 256 * ivf.nlist
    assert abs(footprint.serialized() - len(faiss.serialize_index(index.index))) <= slack


def test_python_dict_formula_matches_what_python_allocates():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = dict(zip(range(10_000_000, 10_150_000), range(1_000, 151_000), strict=True))
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(table) == 150_000
    assert allocated == pytest.approx(python_dict_bytes(150_000), rel=0.02)


def test_direct_map_hash_table_formula_matches_malloc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2  # noqa: B018 (glibc 2.33+)
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2 to count the hash table's allocations")

    class MallInfo(ctypes.Structure):
        names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
        _fields_ = [(name, ctypes.c_size_t) for name in (*names, "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo

    def in_use():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    n = 400_000
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(4), 4, 8)
    x = np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32)
    ivf.train(x[:2000])
    ivf.add_with_ids(x, np.arange(n))
    before = in_use()
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    assert (in_use() - before) / n == pytest.approx(HASH_ENTRY_BYTES, rel=0.1)


def test_id_tables_and_attributes_are_counted():
    plain = index_footprint(make_index("exact", 64), 1_000_000)
    with_attrs = index_footprint(make_index("exact", 64), 1_000_000, ["str", "num", "str_list:3"])
    assert with_attrs.ram_per_item() - plain.ram_per_item() == pytest.approx(4 + 8 + 12)
    names = [p.name for p in plain.parts]
    assert "id table: id -> slot (Python dict)" in names
    assert plain.ram_per_item() > 256 + 8 + 64  # vectors, slot ids, and a dict entry with two ints


def test_the_seed_figure_100m_x_128_float32_is_51_gb_of_vectors():
    footprint = index_footprint(make_index("exact", 128), 100_000_000)
    vectors = next(p for p in footprint.parts if p.name.startswith("vectors"))
    assert vectors.total(100_000_000) == 51_200_000_000


def test_sharded_counts_fixed_parts_per_shard():
    one = index_footprint(make_index("faiss:IVF64,PQ8", DIM), 100_000)
    four = index_footprint(make_index("sharded:4:faiss:IVF64,PQ8", DIM), 100_000)
    assert sum(p.fixed for p in four.parts) == pytest.approx(4 * sum(p.fixed for p in one.parts))
    assert sum(p.fixed for p in one.parts) >= 4 * DIM * (64 + 256)  # centroids and PQ codebooks
    # the per-item parts of the FAISS structure do not depend on how the items are split
    codes = [p.per_item for p in four.parts if p.name == "PQ codes"]
    assert codes == [p.per_item for p in one.parts if p.name == "PQ codes"] == [8]


def test_recommendation_moves_from_exact_to_milvus_as_the_catalogue_grows():
    def chosen(items, ram_gb):
        return plan(items, 64, ram_gb=ram_gb).recommended

    assert chosen(100_000, 16) == "exact"
    assert chosen(2_000_000, 16) == "faiss:IVF2048,PQ64x4fsr,RFlat"  # specs.recommended_faiss
    assert chosen(50_000_000, 64) == "faiss:IVF32768,PQ16"  # beyond 10M: codes only (4 sqrt(n) lists)
    assert chosen(2_000_000, 1) == "faiss:IVF4096,PQ16"  # the float vectors of a refine do not fit
    assert chosen(100_000_000, 25).startswith("faiss_ondisk:IVF")  # IVF-PQ does not fit in 75% of 25 GB
    assert chosen(100_000_000, 4) == "milvus"


def test_requested_spec_is_sized_and_bad_specs_are_refused():
    result = plan(1_000_000, 64, index="sharded:2:faiss:HNSW16", ram_gb=8)
    assert result.requested is not None and result.requested.footprint.ram() > 0
    with pytest.raises(InvalidRequest, match="unknown index backend 'annoy'"):
        plan(1_000, 64, index="annoy", ram_gb=8)
    with pytest.raises(InvalidRequest, match="sizes in-process backends"):
        plan(1_000, 64, index="milvus:HNSW", ram_gb=8)


@pytest.mark.parametrize(
    ("items", "dim", "ram", "message"),
    [
        (0, 64, None, "--items"),
        (10**12, 64, None, "--items"),
        (100, 0, None, "--dim"),
        (100, 64, -1.0, "--ram"),
    ],
)
def test_inputs_are_checked_naming_the_option(items, dim, ram, message):
    with pytest.raises(InvalidRequest, match=message):
        plan(items, dim, ram_gb=ram)


def test_rates_extrapolate_by_work_units():
    builds = {
        "exact": [{"items": 1000, "first_seconds": 1.0, "first_add_units": 1e6, "train_units": 0,
                   "rest_seconds": 0, "rest_add_units": 0}],
        "ivf_pq": [
            {"items": 10, "first_seconds": 5.0, "first_add_units": 1e6, "train_units": 1e7,
             "rest_seconds": 2.0, "rest_add_units": 1e6},
            {"items": 20, "first_seconds": 9.0, "first_add_units": 2e6, "train_units": 2e7,
             "rest_seconds": 6.0, "rest_add_units": 2e6},
        ],
    }  # fmt: skip
    table = RateTable.from_data({"machine": {}, "command": "cmd", "threads": 1, "builds": builds})
    assert table.estimate("exact", {"train": 0, "add": 5e6}).seconds == pytest.approx(5.0)
    rates = table.rates["ivf_pq"]
    assert rates.add == pytest.approx((2e-6, 2.5e-6, 3e-6))  # the rests' rates: low, median, high
    # first calls less their adding at the median add rate: (5 - 2.5) / 1e7 and (9 - 5) / 2e7
    assert rates.train == pytest.approx((2e-7, 2.25e-7, 2.5e-7))
    assert table.estimate("hnsw", {"train": 0, "add": 1}) is None


def test_shipped_table_is_a_measurement_the_planner_reads():
    table = RateTable.load(RATES_FILE)
    assert set(table.rates) >= {"exact", "hnsw", "ivf_pq", "ivf_pq_ondisk"}
    assert table.machine.get("cpu_count") and "plan_calibration.py" in table.command
    # larger catalogues take longer, and HNSW grows faster than linearly
    small = plan(1_000_000, 64, ram_gb=64, rates=table).candidates[2].build
    large = plan(10_000_000, 64, ram_gb=64, rates=table).candidates[2].build
    assert large.seconds > 10 * small.seconds
    assert work_units("hnsw", 10, 1)["add"] > 0 and ivf_nlist(10_000_000) == 16384
    assert candidate_specs(10_000_000, 128)[2] == "faiss:HNSW32"
    assert candidate_specs(10_000_000, 128)[3] == "faiss:IVF16384,PQ32"
    # an IVF's training scales with its k-means iterations from those of the table's builds
    fewer = replace(table, kmeans_iterations=2 * table.kmeans_iterations)
    trained = plan(1_000_000, 64, ram_gb=64, rates=table).candidates[1].build
    assert plan(1_000_000, 64, ram_gb=64, rates=fewer).candidates[1].build.seconds < trained.seconds


def test_cli_prints_a_table_and_json():
    runner = CliRunner()
    shown = runner.invoke(app, ["plan", "--items", "10000000", "--dim", "128", "--ram", "64"])
    assert shown.exit_code == 0, shown.output
    assert "recommended" in shown.output and "bytes/item" in shown.output
    printed = runner.invoke(app, ["plan", "--items", "10000000", "--dim", "128", "--ram", "64", "--json"])
    assert printed.exit_code == 0, printed.output
    data = json.loads(printed.output)
    assert data["recommended"]["spec"] and len(data["candidates"]) == 5
    assert data["build_rates"]["command"]
    refused = runner.invoke(app, ["plan", "--items", "-5", "--dim", "64"])
    assert refused.exit_code != 0


def test_a_build_peaks_at_the_index_plus_one_float_copy_of_the_vectors():
    # the caller's vectors, or a growing FAISS buffer and the copy an add makes of it (docs/scale.md)
    sized = plan(10_000_000, 64, ram_gb=24).candidates[1]
    assert sized.footprint.build_peak() == pytest.approx(sized.footprint.ram() + 10_000_000 * 64 * 4)
    assert sized.as_dict()["build_peak_ram_bytes"] == sized.footprint.build_peak()
    sharded = index_footprint(make_index("sharded:4:faiss:IVF64,PQ8", DIM), 100_000)
    assert sharded.build_peak() - sharded.ram() == pytest.approx(100_000 * DIM * 4)
