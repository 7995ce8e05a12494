"""One rank of a two-process run through user shards, started by test_sharded_training.py with torchrun's
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) in its environment.

    python sharded_ddp_worker.py PARQUET_FOLDER OUT_FOLDER

It runs `run_experiment` with `data.shard_users` (the pipeline reads the ranks from the environment) and
writes what the test compares to OUT_FOLDER/rank{RANK}.pt; rank 0 also writes the bundle.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tests.integration.test_sharded_training import run_settings  # noqa: E402

from recindex.config import load_config  # noqa: E402
from recindex.pipelines.experiment import run_experiment  # noqa: E402


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    config = load_config(None, [*run_settings(folder, 50), "train.epochs=2", "train.device=\"cpu\""])
    result = run_experiment(config, out / "bundle", progress=False)
    torch.save(
        {
            "history": [{k: v for k, v in r.items() if k != "seconds"} for r in result.training.history],
            "valid": result.valid,
            "weights": {k: v.clone() for k, v in result.model.state_dict().items()},
        },
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
