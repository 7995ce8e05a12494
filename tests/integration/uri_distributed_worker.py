"""One rank of a two-process URI training, started by test_distributed_uri.py with torchrun's variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) in its environment.

    python uri_distributed_worker.py OUT_FOLDER SETTING...

It runs the whole experiment (`run_experiment`: the decoder, its index, the ranker, the sharded
evaluation; rank 0 writes OUT_FOLDER/bundle) and writes what this rank holds at the end, its model's
weights (the learned item codes among them) and its metrics, to OUT_FOLDER/rank{RANK}.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from recindex.config import load_config  # noqa: E402
from recindex.pipelines.experiment import run_experiment  # noqa: E402


def main() -> None:
    out, settings = Path(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(1)
    result = run_experiment(load_config(None, settings), out / "bundle", progress=False)
    torch.save(
        {
            "weights": {name: value.clone() for name, value in result.model.state_dict().items()},
            "valid": result.valid,
            "test": result.test,
            "history": result.training.history,
        },
        out / f"rank{os.environ['RANK']}.pt",
    )


if __name__ == "__main__":
    main()
