"""Rich progress bars (epochs and batches, with ETA) that can be switched off for tests and scripts."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class TrainingProgress:
    """An epochs bar that stays on screen when training ends, over a batches bar that goes with it."""

    def __init__(
        self, epochs: int, batches_per_epoch: int, *, enabled: bool = True, console: Console | None = None
    ):
        self.enabled = enabled
        self.batches_per_epoch = batches_per_epoch
        self.epochs = epochs
        self.console = console
        self._progress = None

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console or Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._epochs = self._progress.add_task("epochs", total=self.epochs, info="")
            self._batches = self._progress.add_task("batches", total=self.batches_per_epoch, info="")
        return self

    def advance_batch(self, running_loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._batches, advance=1, info=f"loss {running_loss:.4f}")

    def end_epoch(self, record: dict[str, float]) -> None:
        if self._progress is None:
            return
        info = f"loss {record['loss']:.4f}"
        if "valid_recall@10" in record:
            info += f"  valid R@10 {record['valid_recall@10']:.4f}"
        self._progress.update(self._epochs, advance=1, info=info)
        self._progress.reset(self._batches, total=self.batches_per_epoch, info="")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            # The batches bar was reset for an epoch that will not run (or stopped part-way): the
            # last frame, which stays on screen, shows the epochs alone.
            self._progress.remove_task(self._batches)
            self._progress.__exit__(*exc)


class BatchProgress:
    """A single bar with ETA over `total` batches (evaluation); a no-op when disabled."""

    def __init__(self, total: int, description: str, *, enabled: bool = True):
        self._progress = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> BatchProgress:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=steps)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s")


class RateProgress:
    """A bar over `total` units (items) with their rate and ETA that stays on screen; `completed`: units
    already done before this run (a resumed export); a no-op when disabled."""

    def __init__(self, total: int, description: str, unit: str, *, completed: int = 0, enabled: bool = True):
        self._progress = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, completed=completed)

    def __enter__(self) -> RateProgress:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def advance(self, units: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=units)

    def show(self, completed: int, total: int) -> None:
        """Set the bar to `completed` of `total` units: a count read from elsewhere (a server's)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
