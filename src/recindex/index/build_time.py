"""Build time estimates: a measured table of build rates, and the work model that extrapolates it.

`benchmarks/plan_calibration.py` builds each kind of index at a few sizes on one machine, with one
thread, and writes `build_rates.json` beside this module: the machine, the command, and for each build
the seconds it took and the work units it did. A rate is seconds per work unit; an estimate for another
size is the work units of that size times the rates the table measured (their median, and their
spread as the range). The work units are the dominant operation counts of each structure:

    exact         n * d                                      copying the vectors
    hnsw          n * log2(n) * d                            each insertion searches a graph of depth log n
                                                             (HNSW32, efConstruction 200; other M and
                                                             efConstruction scale it linearly)
    ivf (train)   t * (nlist + ksub) * d                     k-means on the t training vectors, PQ codebooks
    ivf (add)     n * (nlist + ksub) * d                     each vector scored against every centroid and
                                                             (PQ) every codeword; ksub = 0 without PQ

so an estimate is an extrapolation from the machine and sizes in the table, not a measurement: the
table says which machine, and the planner prints it.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from recindex.errors import InvalidRequest

RATES_FILE = Path(__file__).with_name("build_rates.json")
KINDS = ("exact", "hnsw", "ivf_pq", "ivf_pq_ondisk")
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 200  # what the table's HNSW builds use


def ivf_train_size(nlist: int, n: int, train_size: int | None = None) -> int:
    """The vectors an IVF build trains on (FaissIndex's rule: max(50,000, 64 x nlist), at most n)."""
    return min(n, train_size or max(50_000, 64 * nlist))


def work_units(kind: str, n: int, dim: int, *, nlist: int = 0, ksub: int = 0, train: int = 0) -> dict:
    """The work units of a build: {"train": ..., "add": ...} (train is 0 where nothing is trained)."""
    if kind == "exact":
        return {"train": 0.0, "add": float(n) * dim}
    if kind == "hnsw":
        return {"train": 0.0, "add": float(n) * math.log2(max(n, 2)) * dim}
    if kind in ("ivf_pq", "ivf_pq_ondisk"):
        per_vector = float(nlist + ksub) * dim
        return {"train": train * per_vector, "add": n * per_vector}
    raise InvalidRequest(f"no work model for {kind!r}; the kinds are {', '.join(KINDS)}")


@dataclass(frozen=True)
class Rates:
    """Seconds per work unit of one kind, from the table: the median and the range over its builds."""

    train: tuple[float, float, float]  # (low, median, high); zeros where the kind trains nothing
    add: tuple[float, float, float]
    sizes: tuple[int, ...]  # the catalogue sizes the builds had


@dataclass(frozen=True)
class Estimate:
    seconds: float
    low: float
    high: float
    kind: str
    how: str  # the extrapolation, in words


@dataclass(frozen=True)
class RateTable:
    machine: dict
    command: str
    threads: int
    rates: dict[str, Rates]
    # Lloyd iterations of the calibration builds' coarse k-means: an IVF's training work scales with
    # them (tables written before recindex chose 10 were measured with FAISS's 25).
    kmeans_iterations: int = 25

    @classmethod
    def load(cls, path: Path = RATES_FILE) -> RateTable:
        try:
            return cls.from_data(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InvalidRequest(
                f"{path}: no usable table of build rates ({error}); write one with "
                "benchmarks/plan_calibration.py"
            ) from None

    @classmethod
    def from_data(cls, data: dict) -> RateTable:
        """The table as the calibration writes it: machine, command, threads and builds by kind."""
        rates = {kind: _rates(builds) for kind, builds in data["builds"].items()}
        iterations = int(data.get("kmeans_iterations", 25))
        return cls(data["machine"], data["command"], int(data["threads"]), rates, iterations)

    def estimate(self, kind: str, work: dict, scale: float = 1.0) -> Estimate | None:
        """Seconds for a build of `work` units (None: the table has no builds of this kind)."""
        rates = self.rates.get(kind)
        if rates is None:
            return None
        low, mid, high = (
            scale * (work["train"] * rates.train[i] + work["add"] * rates.add[i]) for i in range(3)
        )
        sizes = ", ".join(f"{size:,}" for size in rates.sizes)
        how = f"work units x seconds per unit measured at {sizes} items ({self.threads} thread)"
        return Estimate(mid, low, high, kind, how)


def _rates(builds: list[dict]) -> Rates:
    """The rates of one kind's builds. A build adds its first batch in one call (for kinds that train,
    the training sample: the call trains, then adds it) and the rest in more calls. Kinds that train
    nothing: seconds / add units of the whole build. Kinds that train: the add rate from the adds after
    the first batch (adding only), the train rate from the first batch less its own adding."""
    if not builds:
        raise ValueError("a kind with no builds")
    if not any(build["train_units"] > 0 for build in builds):
        total = [
            (b["first_seconds"] + b["rest_seconds"]) / (b["first_add_units"] + b["rest_add_units"])
            for b in builds
        ]
        return Rates(_spread([]), _spread(total), tuple(int(b["items"]) for b in builds))
    add_rates = [b["rest_seconds"] / b["rest_add_units"] for b in builds if b["rest_add_units"] > 0]
    if not add_rates:
        raise ValueError("a kind that trains, with no build larger than its training sample")
    add_rate = statistics.median(add_rates)
    train_rates = [
        max(b["first_seconds"] - add_rate * b["first_add_units"], 0.0) / b["train_units"] for b in builds
    ]
    return Rates(_spread(train_rates), _spread(add_rates), tuple(int(b["items"]) for b in builds))


def _spread(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0)
    return (min(values), statistics.median(values), max(values))
