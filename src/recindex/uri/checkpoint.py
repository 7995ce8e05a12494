"""Checkpoints of a URI run, which trains in stages: the encoders, the decoder, the ranker.

The encoders and the ranker train in `train.loop.Trainer`, which writes its checkpoints itself (see
`train.checkpoint`); the decoder's layer loops are URI's own and write theirs at the end of every epoch
in which one came due (`train.checkpoint_every` steps passed, or `train.checkpoint_minutes`). Besides
those, a checkpoint is written when a stage that trained ends: after the encoders (once the decoder's
model is built and a two-stage index fitted) and after the decoder (before the ranker).

Every checkpoint of a URI run is the trainer's payload (model, optimizer, random states, ...) plus a
`uri` entry: the stage it was written in and, from the decoder on, what the earlier stages computed (the
whole URI model's weights, its item codes included, the token sizes and the record of the training so
far). A decoder checkpoint adds the decoder's position (`DecoderRun`: the phase, the layer, the epochs
of it done, the balanced k-means start tokens of the layer, the history), its optimizer and its batch
generator, and every checkpoint the URI code writes holds the random states of torch, numpy and Python.
A run resumed in a stage skips the stages before it: its model, item codes included, is the checkpoint's.

Under torchrun rank 0 writes and every rank reads, as for the other families.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from recindex.errors import RecIndexError
from recindex.train.checkpoint import Checkpoints, random_states, restore_random_states
from recindex.train.distributed import Distributed, agree

STAGES = ("encoders", "decoder", "ranker")


@dataclass
class URICheckpoints(Checkpoints):
    """The run's checkpoints, each marked with the stage it was written in and what came before it."""

    stage_state: Callable[[], dict] = field(default=lambda: {"stage": "encoders"}, repr=False)
    payload: dict | None = field(default=None, repr=False)  # the checkpoint resumed from, read once

    @classmethod
    def of(cls, checkpoints: Checkpoints) -> URICheckpoints:
        return cls(**{f.name: getattr(checkpoints, f.name) for f in dataclasses.fields(Checkpoints)})

    def save(self, payload: dict) -> None:
        super().save({**payload, "uri": self.stage_state()})

    def load(self) -> dict:
        if self.payload is None:
            self.payload = super().load()
            stage = self.payload.get("uri", {}).get("stage")
            if stage not in STAGES:
                raise RecIndexError(f"--resume: {self.path} is not the checkpoint of a URI run")
        return self.payload

    def resumed_stage(self) -> str | None:
        """The stage the run resumes in (None: it starts from the beginning)."""
        return self.load()["uri"]["stage"] if self.resume else None

    def enter(self, stage: str, model: torch.nn.Module, record: dict) -> None:
        """From now on checkpoints are `stage`'s and hold the model as it stands and `record` (the
        record of the training so far, which the stages fill in)."""
        self.stage_state = partial(_stage_state, stage, model, record)

    def stage_ended(self, main: bool) -> None:
        """A checkpoint at the end of a stage that trained, with the random states the next one starts
        from (`main`: this process writes it, rank 0 under torchrun)."""
        if main:
            self.save({"random": uri_random_states()})
        self.saved()
        # a resumed run is past its checkpoint: the next stage starts afresh, and the copy can go
        self.resume, self.payload = False, None

    def resume_ranker(self) -> None:
        """In a run resumed in the ranker's stage: the ranker's trainer resumes from the checkpoint when
        the ranker had begun; else the ranker begins now, from the random states the decoder left."""
        payload = self.load()
        self.resume = "run" in payload  # `train.loop.Trainer`'s position
        if not self.resume:
            restore_uri_random_states(payload["random"])


def _stage_state(stage: str, model: torch.nn.Module, record: dict) -> dict:
    """A checkpoint's `uri` entry from the decoder on."""
    return {"stage": stage, "model": model.state_dict(), "sizes": list(model.decoder.sizes), "record": record}


def uri_random_states() -> dict:
    """torch's, Python's and numpy's global random states (numpy's as JSON: no pickled arrays)."""
    kind, key, position, has_gauss, gauss = np.random.get_state()
    numpy = json.dumps([kind, key.tolist(), int(position), int(has_gauss), float(gauss)])
    return {**random_states(), "numpy": numpy}


def restore_uri_random_states(states: dict) -> None:
    restore_random_states(states)
    kind, key, position, has_gauss, gauss = json.loads(states["numpy"])
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss))


@dataclass
class DecoderRun:
    """Where the decoder stage stands between two epochs."""

    phase: str = "uri"  # "uri": the layers; "final": the fit to the finished index; "fixed": two-stage
    layer: int = 0  # the layer under way ("uri")
    epoch: int = 0  # the phase's (or layer's) epochs done
    step: int = 0  # optimizer steps since the stage began
    saved_step: int = 0  # the step of the last checkpoint
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed: float = 0.0  # seconds trained before this process
    phase_start: float = 0.0  # the stage's seconds when the phase began
    start_tokens: torch.Tensor | None = None  # the layer's k-means start tokens, once drawn
    optimizer: dict | None = None  # the optimizer and generator of a resumed phase, until restored
    generator: torch.Tensor | None = None
    began: float = field(default_factory=time.perf_counter, repr=False)

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.began

    def restore(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        """Give a resumed phase's optimizer and generator back their state (once)."""
        if self.optimizer is not None:
            optimizer.load_state_dict(self.optimizer)
            generator.set_state(self.generator)
        self.optimizer = self.generator = None

    def payload(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict:
        fields = {name: getattr(self, name) for name in _SAVED}
        fields["elapsed"] = self.seconds()
        state = {"decoder": fields, "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
        return {**state, "random": uri_random_states()}


def end_of_epoch(
    checkpoints: Checkpoints, context: Distributed, device, run: DecoderRun, optimizer, generator
) -> None:
    """A checkpoint at the end of a decoder epoch if one came due during it (by steps, or by minutes on
    rank 0's clock, which decides for every rank); rank 0 writes it."""
    every = checkpoints.every
    due = every > 0 and run.step // every > run.saved_step // every
    if checkpoints.minutes > 0:
        due = agree(context, due or checkpoints.time_due(), device)
    if not due:
        return
    run.saved_step = run.step
    if context.main:
        checkpoints.save(run.payload(optimizer, generator))
    checkpoints.saved()


_SAVED = ("phase", "layer", "epoch", "step", "saved_step", "history", "phase_start", "start_tokens")


def resumed_decoder(payload: dict) -> DecoderRun | None:
    """The decoder's position in the checkpoint a run resumes from in the decoder's stage (None: it was
    written at the end of the encoders, before the decoder trained), after restoring the random states
    it holds."""
    restore_uri_random_states(payload["random"])
    if "decoder" not in payload:
        return None
    run = DecoderRun(**payload["decoder"])
    run.optimizer, run.generator = payload["optimizer"], payload["generator"]
    return run
