"""Streaming item-frequency estimates for the logQ correction of in-batch negatives.

Implements the estimator of Yi et al. (RecSys 2019, "Sampling-bias-corrected neural modeling for large
corpus item recommendations"): for each item keep the step it was last seen (A) and a moving average of
the number of steps between sightings (B); the probability that a batch contains the item is ~ 1 / B.
It needs no pass over the data beforehand, so it follows drifting popularity. We index items directly
(catalogue ids are dense here) instead of hashing them as the paper does for unbounded id spaces.
"""

from __future__ import annotations

import torch


class StreamingFrequency:
    def __init__(
        self,
        n_items: int,
        *,
        decay: float = 0.05,
        initial_interval: float = 100.0,
        device: torch.device | str = "cpu",
    ):
        if not 0.0 < decay <= 1.0:
            raise ValueError("decay must be in (0, 1]")
        self.decay = decay
        self.last_seen = torch.zeros(n_items, dtype=torch.float64, device=device)
        self.interval = torch.full((n_items,), float(initial_interval), dtype=torch.float64, device=device)
        self.step = 0

    def update(self, items: torch.Tensor) -> None:
        """Record one batch's positive items (a batch counts as one step)."""
        self.step += 1
        seen = torch.unique(items)
        gap = self.step - self.last_seen[seen]
        self.interval[seen] = (1.0 - self.decay) * self.interval[seen] + self.decay * gap
        self.last_seen[seen] = float(self.step)

    def state(self) -> dict:
        """What a checkpoint keeps of the estimate."""
        return {"last_seen": self.last_seen, "interval": self.interval, "step": self.step}

    def load(self, state: dict) -> None:
        self.last_seen = state["last_seen"].to(self.last_seen.device)
        self.interval = state["interval"].to(self.interval.device)
        self.step = int(state["step"])

    def per_batch_probability(self, items: torch.Tensor) -> torch.Tensor:
        """Estimated chance that `items` appear among one batch's positives (at most 1)."""
        return (1.0 / self.interval[items].clamp(min=1.0)).to(torch.float32)
