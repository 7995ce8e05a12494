"""FAISS IVF indexes whose inverted lists live in a file on disk (FAISS `OnDiskInvertedLists`).

    faiss_ondisk:IVF4096,PQ16         the lists (codes and labels) in a memory-mapped file; the coarse
    faiss_ondisk:IVF1024,Flat         quantizer, the codebooks, the id table and the attributes in RAM

For a catalogue whose lists do not fit in memory: the kernel pages the probed lists in and out, so RAM
holds what is searched now, not the whole index. Everything else is the FAISS backend's (`FaissIndex`):
upsert (remove + add under a fresh label), remove, filters as id selectors, the exact fallback for
small filtered sets (through the IVF direct map, which stays in RAM).

Files. While an index is built, or written to after loading, its lists live in a working file of its
own (`work_dir`, default the system's temporary folder; removed when the index goes away). `save`
writes `index.faiss` (the structure, which names the lists file) and copies the lists beside it as
`lists.ivfdata`; `load` maps that file in place (FAISS's IO_FLAG_ONDISK_SAME_DIR finds it next to
`index.faiss` wherever the folder has moved). A loaded index reads the bundle's file and never writes
to it: the first write copies the lists to a working file, so the saved folder keeps matching the
checksums of its manifest.

Only an IVF structure with plain inverted lists qualifies: a refine stage keeps every vector in RAM,
and fast-scan PQ stores its lists in blocks that FAISS cannot keep on disk.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import faiss

from recindex.errors import InvalidRequest
from recindex.index.base import Metric
from recindex.index.faiss_index import KMEANS_ITERATIONS, FaissIndex
from recindex.index.faiss_layers import layers_of
from recindex.index.slots import SlotTable

LISTS_FILE = "lists.ivfdata"
INDEX_FILE = "index.faiss"


class OnDiskFaissIndex(FaissIndex):
    backend = "faiss_ondisk"

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        factory: str = "IVF1024,PQ16",
        *,
        ef_construction: int = 200,
        train_size: int | None = None,
        kmeans_iterations: int = KMEANS_ITERATIONS,
        work_dir: str | None = None,
        search_params=None,
    ):
        super().__init__(
            dim,
            metric,
            factory,
            ef_construction=ef_construction,
            train_size=train_size,
            kmeans_iterations=kmeans_iterations,
            search_params=search_params,
        )
        self.work_dir = work_dir
        self._check_structure()
        self._lists_path: Path | None = None  # the file the lists are mapped from (None: not yet on disk)
        self._owns_lists = False  # False: the file is a saved folder's, and is copied before any write
        self._cleanup: weakref.finalize | None = None

    def _check_structure(self) -> None:
        if not self.layers.is_ivf or self.layers.outer:
            raise InvalidRequest(
                f"faiss_ondisk:{self.factory}: on-disk lists need an IVF structure with nothing around it "
                "(no refine stage, which keeps every vector in RAM, and no pre-transform), "
                "e.g. faiss_ondisk:IVF4096,PQ16"
            )
        lists = self.layers.core.invlists
        if not isinstance(faiss.downcast_InvertedLists(lists), faiss.ArrayInvertedLists):
            raise InvalidRequest(
                f"faiss_ondisk:{self.factory}: its inverted lists are not plain arrays (fast-scan PQ keeps "
                "them in blocks), and FAISS keeps only plain lists on disk; use a PQ without 'fs', e.g. "
                "IVF4096,PQ16"
            )

    @property
    def lists_path(self) -> Path | None:
        """The file the inverted lists live in now (None before the first add)."""
        return self._lists_path

    # ---- where the lists live --------------------------------------------------------------------

    def _working_folder(self) -> Path:
        """A fresh folder of this index's own for its lists, removed when the index is collected."""
        if self.work_dir is not None:
            Path(self.work_dir).mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="recindex-ondisk-", dir=self.work_dir))
        if self._cleanup is not None:
            self._cleanup()  # the previous working folder, if any
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(folder), True)
        return folder

    def _train(self, vectors) -> None:
        super()._train(vectors)
        # Trained and still empty: move the lists to a file before the first vector is added.
        path = self._working_folder() / LISTS_FILE
        ivf = self.layers.core
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the IVF index owns and frees it
        self._lists_path, self._owns_lists = path, True

    def _writable(self) -> None:
        """Before a write to a loaded index: copy its lists to a working file and map that instead."""
        if self._owns_lists or self._lists_path is None:
            return
        folder = self._working_folder()
        shutil.copyfile(self._lists_path, folder / LISTS_FILE)
        # The structure names its lists file; written and read back beside the copy, it maps the copy.
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        self._replace(faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR))
        (folder / INDEX_FILE).unlink()
        self._lists_path, self._owns_lists = folder / LISTS_FILE, True

    def _replace(self, index: faiss.Index) -> None:
        self.index = index
        self.layers = layers_of(index)
        self._param_cache.clear()

    def _add(self, ids, vectors, attributes) -> None:
        self._writable()
        super()._add(ids, vectors, attributes)

    def _remove(self, ids) -> int:
        if not (self.table.lookup(ids) >= 0).any():
            return 0  # nothing to remove: no reason to copy a loaded index's lists
        self._writable()
        return super()._remove(ids)

    def compact(self) -> None:
        """Nothing to compact: IVF removes entries from its lists for real (removed items leave only
        their dead rows in the id table, 8 bytes each)."""

    # ---- persistence -----------------------------------------------------------------------------

    def save(self, path, *, extra=None) -> Path:
        saved = super().save(path, extra=extra)
        if not self._owns_lists and self._lists_path is not None:
            # Saving over the folder this index was loaded from replaces the file it maps: map the
            # saved copy instead, which holds the same lists.
            self._replace(faiss.read_index(str(saved / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR))
            self._lists_path = saved / LISTS_FILE
        return saved

    def _save(self, folder: Path) -> dict:
        state = super()._save(folder)
        if self._lists_path is None:
            raise InvalidRequest("an empty faiss_ondisk index has no lists to save: add items first")
        shutil.copyfile(self._lists_path, folder / LISTS_FILE)
        # work_dir is not saved: a folder of the machine that built the index (the loader's options or
        # the system's temporary folder serve the one that loads it)
        return {**state, "lists": LISTS_FILE}

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> OnDiskFaissIndex:
        state = manifest["state"]
        index = cls(
            manifest["dim"],
            manifest["metric"],
            state["factory"],
            ef_construction=state["ef_construction"],
            train_size=state["train_size"],
            kmeans_iterations=state.get("kmeans_iterations", 25),
        )
        if not (folder / state.get("lists", LISTS_FILE)).is_file():
            raise InvalidRequest(f"{folder}: the on-disk lists file {LISTS_FILE} is missing")
        index._replace(faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR))
        index._lists_path, index._owns_lists = folder / LISTS_FILE, False
        index.table = SlotTable.load(folder)
        if index.index.ntotal != len(index):
            raise InvalidRequest(
                f"{folder}: {INDEX_FILE} holds {index.index.ntotal} vectors, the id table {len(index)}"
            )
        return index
