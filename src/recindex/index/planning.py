"""The memory planner: for n items of dimension d, what each backend takes (RAM, disk, build time) and
which one to use (`recindex plan`).

Candidates, in the order they are preferred when they fit:

    exact                       while a query's scan of every vector stays small (EXACT_MAX_SCAN)
    faiss:IVF{lists},PQ{d}x4fsr,RFlat  up to 10M items (`specs.recommended_faiss`): 4-bit codes
                                scanned with SIMD, the best re-scored from float vectors in RAM; builds
                                in seconds where a graph takes minutes, at HNSW's recall per query time
    faiss:HNSW32                sized for comparison, never chosen: its build at 1M is minutes
    faiss:IVF{nlist},PQ{m}      beyond 10M items (or when the float vectors do not fit): m bytes a vector
    faiss_ondisk:IVF{nlist},PQ{m}  when even IVF-PQ does not fit in RAM: the lists in a file
    milvus                      when nothing fits one machine: a Milvus cluster spreads the items

"Fits" means the index's RAM is at most FIT_FRACTION of the RAM given: the process also holds the
model, query buffers and the service. For IVF-PQ, nlist is the power of two nearest 4 x sqrt(n) (FAISS's
guideline is 4 to 16 x sqrt(n)); m is d/4 bytes (4 dimensions a byte), or the largest divisor of d
below that. Sizes come from `footprint` (the structures' formulas), build times from `build_time`
(a measured table, extrapolated).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from recindex.errors import InvalidRequest
from recindex.index.base import MAX_DIM
from recindex.index.build_time import (
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    Estimate,
    RateTable,
    ivf_train_size,
    work_units,
)
from recindex.index.factory import make_index
from recindex.index.faiss_index import FaissIndex
from recindex.index.faiss_ondisk import OnDiskFaissIndex
from recindex.index.footprint import Footprint, index_footprint
from recindex.index.sharded import ShardedIndex
from recindex.index.specs import recommended_faiss

MAX_ITEMS = 100_000_000_000  # 1e11: beyond any one catalogue; refuses typos such as an extra zero run
EXACT_MAX_SCAN = 32_000_000  # floats a query scans with exact search (500k x 64): a few ms per query
FLOAT_MAX_ITEMS = 10_000_000  # beyond it, PQ codes only (float vectors' RAM outgrows one machine)
FIT_FRACTION = 0.75


def ivf_nlist(n: int) -> int:
    return 2 ** max(4, min(16, round(math.log2(4 * math.sqrt(max(n, 1))))))


def pq_bytes(dim: int) -> int:
    return max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)


def candidate_specs(n: int, dim: int) -> list[str]:
    nlist, m = ivf_nlist(n), pq_bytes(dim)
    return [
        "exact",
        recommended_faiss(n, dim),
        "faiss:HNSW32",
        f"faiss:IVF{nlist},PQ{m}",
        f"faiss_ondisk:IVF{nlist},PQ{m}",
    ]


def available_ram() -> tuple[int, str]:
    """Bytes of memory available now, and where the figure comes from."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable of /proc/meminfo"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages (sysconf)"
    except (ValueError, OSError):
        raise InvalidRequest("cannot read this machine's available memory: give --ram GB") from None


@dataclass
class Sized:
    """One backend sized for the catalogue."""

    spec: str
    footprint: Footprint
    build: Estimate | None
    fits: bool
    note: str = ""

    def as_dict(self) -> dict:
        build = None
        if self.build is not None:
            build = {"seconds": self.build.seconds, "low": self.build.low, "high": self.build.high}
        return {
            "spec": self.spec,
            "ram_bytes": self.footprint.ram(),
            "ram_bytes_per_item": self.footprint.ram_per_item(),
            "build_peak_ram_bytes": self.footprint.build_peak(),
            "disk_bytes": self.footprint.disk(),
            "fits": self.fits,
            "build_seconds": build,
            "parts": [
                {"name": p.name, "per_item": p.per_item, "fixed": p.fixed, "where": p.where}
                for p in self.footprint.parts
                if p.where != "saved"
            ],
        }


@dataclass
class Plan:
    items: int
    dim: int
    ram: int
    ram_source: str
    candidates: list[Sized]
    recommended: str
    reason: str
    requested: Sized | None = None
    rates: RateTable | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        rates = None
        if self.rates is not None:
            rates = {
                "machine": self.rates.machine,
                "command": self.rates.command,
                "threads": self.rates.threads,
            }
        return {
            "items": self.items,
            "dim": self.dim,
            "ram_bytes": self.ram,
            "ram_source": self.ram_source,
            "fit_fraction": FIT_FRACTION,
            "recommended": {"spec": self.recommended, "reason": self.reason},
            "candidates": [c.as_dict() for c in self.candidates],
            "requested": self.requested.as_dict() if self.requested else None,
            "build_rates": rates,
            "notes": self.notes,
        }


def check_inputs(items, dim, ram_gb) -> None:
    if not isinstance(items, int) or isinstance(items, bool) or not 1 <= items <= MAX_ITEMS:
        raise InvalidRequest(f"--items must be a whole number in 1..{MAX_ITEMS:,}, got {items!r}")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_DIM:
        raise InvalidRequest(f"--dim must be a whole number in 1..{MAX_DIM}, got {dim!r}")
    if ram_gb is not None and not (isinstance(ram_gb, int | float) and 0 < ram_gb <= 1_000_000):
        raise InvalidRequest(f"--ram must be a number of GB in (0, 1,000,000], got {ram_gb!r}")


def size(
    spec: str,
    items: int,
    dim: int,
    ram: int,
    rates: RateTable | None,
    attributes: list[str],
    metric: str = "ip",
) -> Sized:
    index = make_index(spec, dim, metric)  # empty: its structure, not its data
    footprint = index_footprint(index, items, attributes)
    build = _build_estimate(index, items, rates)
    return Sized(spec, footprint, build, footprint.ram() <= FIT_FRACTION * ram)


def _build_estimate(index, n: int, rates: RateTable | None) -> Estimate | None:
    if rates is None:
        return None
    if isinstance(index, ShardedIndex):  # shards are built one after the other
        shards = len(index.shards)
        one = _build_estimate(index.shards[0], math.ceil(n / shards), rates)
        if one is None:
            return None
        return Estimate(one.seconds * shards, one.low * shards, one.high * shards, one.kind, one.how)
    if not isinstance(index, FaissIndex):
        return rates.estimate("exact", work_units("exact", n, index.dim))
    layers = index.layers
    if layers.is_hnsw:
        m = layers.core.hnsw.nb_neighbors(1)
        scale = (m / HNSW_M) * (index.ef_construction / HNSW_EF_CONSTRUCTION)
        return rates.estimate("hnsw", work_units("hnsw", n, index.dim), scale)
    if layers.is_ivf:
        ivf = layers.core
        pq = getattr(ivf, "pq", None)
        ksub = pq.ksub if pq is not None else 0
        train = ivf_train_size(ivf.nlist, n, index.train_size)
        train *= index.kmeans_iterations / rates.kmeans_iterations
        work = work_units("ivf_pq", n, index.dim, nlist=ivf.nlist, ksub=ksub, train=train)
        kind = "ivf_pq_ondisk" if isinstance(index, OnDiskFaissIndex) else "ivf_pq"
        return rates.estimate(kind, work)
    if layers.core.is_trained:  # Flat and other structures that need no training: a copy
        return rates.estimate("exact", work_units("exact", n, index.dim))
    return None


def plan(
    items: int,
    dim: int,
    *,
    index: str | None = None,
    ram_gb: float | None = None,
    attributes: list[str] | None = None,
    rates: RateTable | None = None,
) -> Plan:
    """Size the candidates (and `index`, when given) for `items` vectors of `dim`, and pick one."""
    check_inputs(items, dim, ram_gb)
    attributes = attributes or []
    ram, source = (int(ram_gb * 1e9), "--ram") if ram_gb is not None else available_ram()
    sized = [size(spec, items, dim, ram, rates, attributes) for spec in candidate_specs(items, dim)]
    exact, fast_scan, _hnsw, ivfpq, ondisk = sized
    budget = f"{FIT_FRACTION:.0%} of {gb(ram)} RAM"
    if exact.fits and items * dim <= EXACT_MAX_SCAN:
        chosen, reason = exact, f"{items:,} x {dim} floats: a scan of every vector costs a query little"
    elif fast_scan.fits and items <= FLOAT_MAX_ITEMS:
        chosen, reason = (
            fast_scan,
            (
                "up to 10M items: 4-bit codes scanned with SIMD and the best re-scored exactly give a "
                "graph's recall per query time, and build in a fraction of a graph's time; "
                f"it fits ({budget})"
            ),
        )
    elif ivfpq.fits:
        chosen, reason = (
            ivfpq,
            (
                f"{ivfpq.spec.split(',')[1]} codes: {_why_not_float(fast_scan, items, budget)}; "
                f"IVF-PQ fits in {gb(ivfpq.footprint.ram())} (fast-scan PQ at 4 bits halves the codes again)"
            ),
        )
    elif ondisk.fits:
        chosen, reason = (
            ondisk,
            (
                f"IVF-PQ needs {gb(ivfpq.footprint.ram())}, over {budget}: its lists go to a file "
                f"({gb(ondisk.footprint.disk())} on disk, paged in as queries probe them)"
            ),
        )
    else:
        chosen, reason = (
            None,
            (
                f"even with its lists on disk one process needs {gb(ondisk.footprint.ram())} ({budget}): "
                "serve from a Milvus cluster (milvus:IVF_PQ or DiskANN on the servers), or shard by region"
            ),
        )
    requested = size(index, items, dim, ram, rates, attributes) if index else None
    notes = []
    if rates is None:
        notes.append("no build rates: build times are not estimated")
    return Plan(
        items, dim, ram, source, sized, chosen.spec if chosen else "milvus", reason, requested, rates, notes
    )


def _why_not_float(fast_scan: Sized, items: int, budget: str) -> str:
    """Why the recommended spec, which keeps every float vector in RAM for its refine, is not chosen."""
    ram = gb(fast_scan.footprint.ram())
    if items > FLOAT_MAX_ITEMS and fast_scan.fits:
        return f"beyond 10M items PQ keeps RAM and build time down (float vectors for a refine: {ram})"
    return f"with float vectors for a refine the index would need {ram}, over {budget}"


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:,.1f} MB"
