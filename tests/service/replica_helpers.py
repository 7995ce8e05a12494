"""What the tests of several serving processes on one log share (`serve --workers N` and JetStream
replicas): the dataset their bundle is trained on, the write key, unit query vectors, the top answer
to a vector, and waiting for a condition that another process makes true."""

from __future__ import annotations

import time

import numpy as np
import pytest

DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
KEY = {"X-API-Key": "k"}


def unit(seed: int) -> list[float]:
    """A random unit vector of the tiny bundle's dimension (16), the same for the same seed."""
    vector = np.random.default_rng(seed).standard_normal(16)
    return (vector / np.linalg.norm(vector)).tolist()


def top_item(http, vector: list[float]) -> str:
    return http.post("/v1/recommend", json={"vector": vector, "k": 1}).json()["items"][0]["item_id"]


def eventually(check, seconds: float = 10.0, interval: float = 0.01) -> None:
    """Wait until `check()` holds (another process applies a write in its own time), or fail."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {seconds} s")
        time.sleep(interval)
