"""Checkpoints of a training run, so that a run killed at any moment continues where it stood.

`train.checkpoint_every = N` writes `checkpoint.pt` into the run's `--out` folder after every N optimizer
steps (a run's checkpoints then fall at the same points whatever the machine's speed, and a test can
kill a run between two of them); `train.checkpoint_minutes = M` (also, or instead) after the first step
that ends M minutes after the last checkpoint (or the start), on rank 0's clock under torchrun, which
decides for every rank. A checkpoint holds everything the rest of the
run depends on: the model, the optimizer (and fp16's gradient scaler), the trainer's state (the
logQ frequency estimate, the mined hard negatives, a family's own, such as MFLI's switched-on levels),
the early-stopping state (the best epoch's weights and metrics, the history, epochs without gain), the
data position (the epoch, the batches of it done, and the numpy generator's state when that epoch's
batches were drawn, from which they are drawn again), the random states of torch (CPU and GPUs),
numpy and Python, and the seconds trained so far (for `max_seconds`). This trainer has no learning-rate
scheduler, so there is none to save. `recindex train ... --resume` reads it back and the run goes on
bit for bit as if it had never stopped (in one process; under torchrun every rank restores rank 0's
random state, so a resumed data-parallel run is the same run within noise).

It is written to a temporary file beside it and renamed over it, so a kill mid-write leaves the previous
checkpoint whole. It is read with `torch.load(weights_only=True)`: tensors, numbers, strings, lists
and dicts only (the generators' states are stored as JSON text), never arbitrary pickled objects.
The finished bundle replaces the folder, checkpoint included.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recindex.errors import RecIndexError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


@dataclass
class RunState:
    """Where a run stands between two optimizer steps (the trainer's loop variables)."""

    result: Any  # the TrainResult being filled in
    best_state: dict | None = None
    since_best: int = 0
    epoch: int = 1  # the epoch under way
    position: int = 0  # its batches done
    total: float = 0.0  # its summed batch losses
    count: int = 0
    epoch_rng: str | None = None  # the numpy generator when its batches were drawn (None: not yet)
    step: int = 0  # optimizer steps since the run began
    elapsed: float = 0.0  # seconds trained before this process

    def next_epoch(self) -> None:
        self.epoch, self.position, self.total, self.count, self.epoch_rng = self.epoch + 1, 0, 0.0, 0, None


@dataclass
class Checkpoints:
    """Where a run's checkpoint is, how often it is written, and whether the run starts from it."""

    folder: Path
    every: int = 0  # optimizer steps between checkpoints (0: none by steps)
    resume: bool = False
    settings: str = ""  # the run's settings (JSON), which a resumed run must repeat
    ignored: tuple[str, ...] = field(default=())  # settings a resumed run may change (threads, limits)
    minutes: float = 0.0  # a checkpoint once this long has passed since the last (0: none by time)
    clock: Callable[[], float] = time.monotonic  # seconds; a test gives its own
    last: float | None = field(default=None, repr=False)  # the clock at the last checkpoint (or start)

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def due(self, step: int) -> bool:
        """Due by steps: the same answer on every rank."""
        return self.every > 0 and step % self.every == 0

    def time_due(self) -> bool:
        """Due by minutes on this process's clock (under torchrun, rank 0's answer is the one taken)."""
        if self.minutes <= 0:
            return False
        if self.last is None:
            self.last = self.clock()
        return self.clock() - self.last >= self.minutes * 60.0

    def saved(self) -> None:
        """A checkpoint was written (or the run started): the minutes count from now."""
        self.last = self.clock()

    def save(self, payload: dict) -> None:
        """Write atomically: a temporary file in the same folder, flushed, then renamed over the last."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{CHECKPOINT_NAME}.", dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save({"format": FORMAT, "settings": self.settings, **payload}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(name, self.path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def load(self) -> dict:
        if not self.path.is_file():
            raise RecIndexError(
                f"--resume: {self.path} does not exist (no checkpoint was written: set "
                "train.checkpoint_every (steps) or train.checkpoint_minutes when starting the run)"
            )
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged or foreign file: say which, never unpickle beyond tensors
            raise RecIndexError(f"--resume: {self.path} is not a readable checkpoint ({error})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise RecIndexError(f"--resume: {self.path} is not a checkpoint of format {FORMAT}")
        changed = _changed_settings(payload.get("settings", ""), self.settings, self.ignored)
        if changed:
            raise RecIndexError(
                f"--resume: the run in {self.folder} was started with other settings ({', '.join(changed)}); "
                "resume it with the settings it started with"
            )
        return payload


def _changed_settings(saved: str, now: str, ignored: tuple[str, ...]) -> list[str]:
    def flat(text: str) -> dict[str, Any]:
        sections = json.loads(text) if text else {}
        return {
            f"{name}.{key}": value
            for name, values in sections.items()
            for key, value in (values.items() if isinstance(values, dict) else [("", values)])
            if f"{name}.{key}" not in ignored
        }

    before, after = flat(saved), flat(now)
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def generator_state(rng: np.random.Generator) -> str:
    """A numpy generator's state as JSON (its 128-bit integers do not fit a tensor)."""
    return json.dumps(rng.bit_generator.state)


def set_generator_state(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)


def random_states() -> dict:
    states = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = json.loads(states["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def run_state_payload(run: RunState) -> dict:
    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name != "result"}
    return {**fields, "result": dataclasses.asdict(run.result)}


def restore_run_state(run: RunState, payload: dict) -> None:
    for name, value in payload.items():
        if name == "result":
            for key, item in value.items():
                setattr(run.result, key, item)
        else:
            setattr(run, name, value)


def trainer_payload(trainer, optimizer, run: RunState) -> dict:
    """What a checkpoint holds of a `train.loop.Trainer` between two steps (see the module's text)."""
    return {
        "model": trainer.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else {},
        "frequency": trainer.frequency.state(),
        "hard": trainer.hard,
        "run": run_state_payload(run),
        "random": random_states(),
        "trainer": trainer.checkpoint_state(),
    }


def restore_trainer(trainer, payload: dict, optimizer, run: RunState) -> None:
    """Take back what `trainer_payload` gave: the trainer, its optimizer and the run's state."""
    trainer.model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if trainer.scaler is not None:
        trainer.scaler.load_state_dict(payload["scaler"])
    trainer.frequency.load(payload["frequency"])
    trainer.hard = None if payload["hard"] is None else payload["hard"].to(trainer.device)
    restore_run_state(run, payload["run"])
    trainer.restore_checkpoint_state(payload["trainer"])
    restore_random_states(payload["random"])
