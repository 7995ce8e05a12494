"""An experiment's plan without running it (`recindex experiment run FILE --dry-run`): every cell of the
matrix with the cell it starts from and what is read per index, after every cell's config was checked
(the same checks as a run, so a file that plans also starts)."""

from __future__ import annotations

from dataclasses import dataclass

from recindex.experiments.matrix import Cell, expand
from recindex.experiments.spec import POPULARITY, ExperimentSpec, IndexSweep, load_spec


@dataclass(frozen=True)
class Plan:
    spec: ExperimentSpec
    cells: list[Cell]

    @property
    def trainings(self) -> int:
        return len(self.cells)

    @property
    def validation_points(self) -> int:
        return sum(len(sweep.points()) for cell in self.cells for sweep in _swept(cell))

    @property
    def test_reads_at_most(self) -> int:
        """Exact search, each baseline and each setting that may be read on test (every point for
        `each` and `frontier`, one for `best` and `target`)."""
        return sum(1 + sum(_reads(sweep) for sweep in cell.indexes) for cell in self.cells)

    def lines(self) -> list[str]:
        spec = self.spec
        lines = [
            f"experiment {spec.name} ({spec.path})",
            f"  {len(spec.datasets)} dataset(s) x {len(spec.families)} family(ies) x "
            f"{len(spec.overrides)} override(s), {len({c.seed for c in self.cells})} seed(s): "
            f"{len(self.cells)} cells",
        ]
        for cell in self.cells:
            starts = f" <- {cell.depends_on} ({cell.init_setting})" if cell.depends_on else ""
            reads = ", ".join(
                f"{sweep.name}: {len(sweep.points())} point(s), {sweep.choose}"
                if sweep.spec != POPULARITY
                else f"{sweep.name}: baseline"
                for sweep in cell.indexes
            )
            lines.append(
                f"  {cell.id} [{cell.config.model.kind}]{starts}; exact" + (f", {reads}" if reads else "")
            )
        lines.append(
            f"{self.trainings} trainings, {self.validation_points} validation operating points, "
            f"at most {self.test_reads_at_most} test reads; comparisons: {len(spec.comparisons)}"
        )
        return lines


def _swept(cell: Cell) -> list[IndexSweep]:
    return [sweep for sweep in cell.indexes if sweep.spec != POPULARITY]


def _reads(sweep: IndexSweep) -> int:
    if sweep.spec == POPULARITY or sweep.choose in ("best", "target"):
        return 1
    return len(sweep.points())


def plan(path, seeds: int | None = None, data_dir: str | None = None) -> Plan:
    spec = load_spec(path)
    return Plan(spec, expand(spec, seeds, data_dir=data_dir))
