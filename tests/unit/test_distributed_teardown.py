"""Tearing the process group down: the DDP wrapper of a finished trainer holds the group (its reducer
does), and the trainer and its wrapper refer to each other (the wrapper's forward is the trainer's loss),
so only the cyclic garbage collector frees them. `distributed.stop` collects them before it destroys the
group: left to a later collection, the group's gloo threads were torn down at whatever moment that came,
after the peer processes had gone or during the interpreter's shutdown."""

from __future__ import annotations

import gc
import weakref

import torch
import torch.distributed as dist
from torch import nn

from recindex.train import distributed


class _Trainer:
    """A trainer's shape: it holds its DDP wrapper, whose forward is its own method."""

    def __init__(self):
        self.model = nn.Linear(2, 1)
        self.step = distributed.data_parallel(self.model, self.loss, torch.device("cpu"))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch).sum()


def test_stop_frees_finished_data_parallel_wrappers_before_the_group_goes(tmp_path, monkeypatch):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    destroy = dist.destroy_process_group
    alive_at_destroy: list[bool] = []

    def recording_destroy(*args, **kwargs):
        alive_at_destroy.append(wrapper() is not None)
        destroy(*args, **kwargs)

    monkeypatch.setattr(dist, "destroy_process_group", recording_destroy)
    collecting = gc.isenabled()
    gc.disable()  # no collection may happen to come between here and `stop`
    try:
        trainer = _Trainer()
        trainer.step(torch.ones(1, 2)).backward()
        wrapper = weakref.ref(trainer.step)
        del trainer
        # the context says two ranks (what `stop` acts on); the group here is this process alone
        distributed.stop(distributed.Distributed(rank=0, world_size=2))
    finally:
        if collecting:
            gc.enable()
        if dist.is_initialized():
            destroy()
    assert alive_at_destroy == [False]
