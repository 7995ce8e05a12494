"""One rank of a two-process data-parallel training, started by test_distributed_training.py with
torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) in its environment.

    python distributed_worker.py OUT_FOLDER GATHER(0|1)

It trains the tiny two-tower model of `distributed_setup` with the `Trainer` directly (the trainer's own
state is what the test checks) and writes what the test compares to OUT_FOLDER/rank{RANK}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from tests.integration.distributed_setup import PER_RANK_BATCH, train_tiny  # noqa: E402

from recindex.models.devices import resolve_device  # noqa: E402
from recindex.train import distributed  # noqa: E402


def main() -> None:
    out, gather = Path(sys.argv[1]), sys.argv[2] == "1"
    context = distributed.from_environment()
    distributed.start(context, resolve_device("cpu"))
    try:
        trainer, result = train_tiny(PER_RANK_BATCH, gather, context)
        torch.save(
            {
                "history": result.history,
                "best_valid": result.best_valid,
                "interval": trainer.frequency.interval,
                "weights": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            },
            out / f"rank{dist.get_rank()}.pt",
        )
    finally:
        distributed.stop(context)


if __name__ == "__main__":
    main()
