"""FAISS IVF with its inverted lists in a file: where the file lives, save and load beside the index,
a loaded index that never writes to its saved folder, and clear refusals of structures it cannot hold.
(The Index contract itself is checked by tests/contract for faiss_ondisk:IVF16,Flat and IVF16,PQ12.)"""

from __future__ import annotations

import gc
import shutil

import faiss
import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.faiss_ondisk import LISTS_FILE, OnDiskFaissIndex
from recindex.index.specs import OnDiskFaissSpec
from recindex.pipelines.indexes import SPECS, load_index, make_index, parse_spec

DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


ITEMS = vectors(1500)
QUERIES = vectors(20, 1)


def filled(tmp_path, spec: str = "faiss_ondisk:IVF16,Flat") -> OnDiskFaissIndex:
    index = make_index(spec, DIM, options={"work_dir": str(tmp_path / "work")})
    index.add(np.arange(len(ITEMS)), ITEMS, attributes={"shop": [f"s{i % 3}" for i in range(len(ITEMS))]})
    return index


def test_spec_reads_factory_and_work_dir():
    assert parse_spec("faiss_ondisk:IVF64,PQ8", SPECS) == OnDiskFaissSpec(factory="IVF64,PQ8")
    assert parse_spec("faiss_ondisk", SPECS).factory == "IVF1024,PQ16"


def test_lists_live_in_a_file_in_work_dir(tmp_path):
    index = filled(tmp_path)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)
    assert index.lists_path.parent.parent == tmp_path / "work"
    # The file holds every code and label: at least (4 x 16 + 8) bytes for each of the 1,500 items.
    assert index.lists_path.stat().st_size >= len(ITEMS) * (4 * DIM + 8)
    folder = index.lists_path.parent
    del index, lists
    gc.collect()
    assert not folder.exists(), "the working folder outlives its index"


def test_save_puts_lists_beside_the_index_and_a_moved_folder_loads(tmp_path):
    index = filled(tmp_path)
    before = index.search(QUERIES, 10, filter='shop == "s1"')
    index.save(tmp_path / "saved")
    assert (tmp_path / "saved" / LISTS_FILE).is_file()
    shutil.move(tmp_path / "saved", tmp_path / "moved")  # the structure names a file that is now gone
    loaded = load_index(tmp_path / "moved")
    assert isinstance(loaded, OnDiskFaissIndex)
    assert loaded.lists_path == tmp_path / "moved" / LISTS_FILE
    after = loaded.search(QUERIES, 10, filter='shop == "s1"')
    np.testing.assert_array_equal(after.ids, before.ids)


def test_writes_to_a_loaded_index_leave_its_folder_as_saved(tmp_path):
    filled(tmp_path).save(tmp_path / "saved")
    saved_bytes = (tmp_path / "saved" / LISTS_FILE).read_bytes()
    loaded = load_index(tmp_path / "saved")
    assert loaded.remove([5, 6]) == 2
    loaded.add([5000], vectors(1, 7))
    assert loaded.lists_path.parent.name.startswith("recindex-ondisk-")
    assert (tmp_path / "saved" / LISTS_FILE).read_bytes() == saved_bytes
    again = load_index(tmp_path / "saved")  # the manifest's checksums still hold
    assert len(again) == len(ITEMS)
    assert len(loaded) == len(ITEMS) - 1
    assert loaded.search(vectors(1, 7), 1).ids[0, 0] == 5000


def test_saving_over_its_own_folder_then_writing(tmp_path):
    filled(tmp_path).save(tmp_path / "saved")
    loaded = load_index(tmp_path / "saved")
    loaded.save(tmp_path / "saved")  # replaces the file the loaded index maps
    loaded.add([7000], vectors(1, 9))
    assert loaded.search(vectors(1, 9), 1).ids[0, 0] == 7000
    assert len(load_index(tmp_path / "saved")) == len(ITEMS)


def test_empty_index_refuses_to_save(tmp_path):
    with pytest.raises(InvalidRequest, match="empty faiss_ondisk index"):
        make_index("faiss_ondisk:IVF16,Flat", DIM).save(tmp_path / "x")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("HNSW16", "need an IVF structure"),
        ("IVF16,PQ4,RFlat", "no refine stage"),
        ("OPQ4,IVF16,PQ4", "no pre-transform"),
        ("IVF16,PQ8x4fs", "fast-scan PQ keeps them in blocks"),
    ],
)
def test_structures_without_plain_ivf_lists_are_refused(factory, message):
    with pytest.raises(InvalidRequest, match=message):
        make_index(f"faiss_ondisk:{factory}", DIM)
