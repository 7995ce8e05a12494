"""Operating points of an index, in the manner of FAISS's auto-tuning: every search-parameter setting of a
sweep is measured on the validation split (a quality, the sweep's `select_metric`, against a cost, time
or candidates scored per query), the Pareto frontier is kept by `faiss.OperatingPoints`, and the
settings to report are chosen from it; only those are then read on the test split.

    choose = "each"       every setting of the sweep (comparisons "at equal nprobe")
    choose = "frontier"   the settings on the validation frontier
    choose = "best"       the setting of highest quality (the cheaper one on a tie)
    choose = "target"     the cheapest setting on the frontier whose quality reaches `target`
                          (the best one, marked as missing the target, when none does)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss

from recindex.bundle import Bundle
from recindex.errors import RecIndexError
from recindex.eval.index_eval import IndexEvaluation, evaluate_index
from recindex.experiments.spec import IndexSweep
from recindex.index.base import BaseIndex

COST_KEYS = {"time": "batched_ms_per_query", "candidates": "candidates_scored_per_query"}


@dataclass(frozen=True)
class OperatingPoint:
    params: dict[str, Any]
    quality: float  # the sweep's select_metric on validation
    cost: float  # ms per query (batched) or candidates scored per query
    metrics: dict[str, float]  # every validation metric through the index
    index_cost: dict[str, float]  # index recall, candidates, latency

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "quality": self.quality,
            "cost": self.cost,
            "metrics": self.metrics,
            "index_cost": self.index_cost,
        }


def quality_of(evaluation: IndexEvaluation, metric: str, where: str) -> float:
    value = evaluation.index.get(metric, evaluation.cost.get(metric))
    if value is None:
        known = sorted({*evaluation.index, *evaluation.cost})
        raise RecIndexError(f"{where}: select_metric {metric!r} is not measured; known: {', '.join(known)}")
    return float(value)


def measure(bundle: Bundle, index: BaseIndex, sweep: IndexSweep) -> list[OperatingPoint]:
    """Every setting of the sweep on the validation split."""
    points = []
    for params in sweep.points():
        evaluation = evaluate_index(
            bundle, index, "valid", params=params, single_queries=sweep.single_queries
        )
        points.append(
            OperatingPoint(
                params,
                quality_of(evaluation, sweep.select_metric, f"[indexes.{sweep.name}]"),
                float(evaluation.cost[COST_KEYS[sweep.cost]]),
                evaluation.index,
                evaluation.cost,
            )
        )
    return points


def frontier(points: list[OperatingPoint]) -> list[int]:
    """Positions of the points no other point beats on both quality and cost, cheapest first."""
    operating = faiss.OperatingPoints()
    for number, point in enumerate(points):
        operating.add(point.quality, point.cost, str(number))
    optimal = operating.optimal_pts
    # OperatingPoints keeps a (perf 0, t 0) origin of its own; it names no point of ours.
    keys = [optimal.at(i).key for i in range(optimal.size())]
    chosen = [int(key) for key in keys if key.isdigit()]
    return sorted(chosen, key=lambda number: (points[number].cost, -points[number].quality))


def choose(points: list[OperatingPoint], sweep: IndexSweep) -> list[tuple[int, bool]]:
    """(position, reached) of the settings to read on the test split; `reached` is False only when a
    target is set and no setting reaches it."""
    if sweep.choose == "each":
        return [(number, True) for number in range(len(points))]
    front = frontier(points)
    if sweep.choose == "frontier":
        return [(number, True) for number in front]
    best = max(front, key=lambda number: (points[number].quality, -points[number].cost))
    if sweep.choose == "best":
        return [(best, True)]
    reaching = [number for number in front if points[number].quality >= sweep.target]
    return [(reaching[0], True)] if reaching else [(best, False)]
