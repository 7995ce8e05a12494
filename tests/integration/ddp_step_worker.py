"""One rank of the two-process step comparison, started by test_ddp_step_parity.py with torchrun's
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) in its environment.

    python ddp_step_worker.py OUT_FOLDER

For every case of `ddp_step_setup.CASES` it takes one DDP step and writes the gradients, the positions
this rank held and its loss to OUT_FOLDER/rank{RANK}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from tests.integration.ddp_step_setup import CASES, step_gradients, tiny_trainer  # noqa: E402

from recindex.models.devices import resolve_device  # noqa: E402
from recindex.train import distributed  # noqa: E402
from recindex.train.checkpoint import Checkpoints  # noqa: E402


def checkpoint_decisions(context, out: Path) -> list[bool]:
    """Whether a checkpoint is due after step 1 when a minute has passed on one rank's clock only:
    first on rank 0's, then on rank 1's (the clocks are fakes; no step count is due)."""
    decisions = []
    for late in (0, 1):
        clock = iter([0.0, 90.0 if context.rank == late else 30.0])  # at the start, then at the step
        checkpoints = Checkpoints(out, every=0, minutes=1.0, clock=lambda clock=clock: next(clock))
        trainer = tiny_trainer("full", context, checkpoints)
        checkpoints.saved()
        decisions.append(trainer.checkpoint_due(1))
    return decisions


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    context = distributed.from_environment()
    distributed.start(context, resolve_device("cpu"))
    try:
        results = {}
        for case in CASES:
            gradients, positions, loss = step_gradients(case, context)
            results[case] = {"gradients": gradients, "positions": positions, "loss": loss}
        results["checkpoint_due"] = checkpoint_decisions(context, out)
        torch.save(results, out / f"rank{dist.get_rank()}.pt")
    finally:
        distributed.stop(context)


if __name__ == "__main__":
    main()
