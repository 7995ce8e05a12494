"""What the composition root needs of SCI: SymmAligner training (the model and its bundle are the plain
two-tower's), and the `ci` index's material from any two-tower bundle (the build then checks that its
towers read an item alike, `recindex.sci.index`)."""

from __future__ import annotations

from typing import Any

from recindex.bundle import Bundle
from recindex.data.splits import split_for
from recindex.sci.train import SymmetricTrainer
from recindex.sci.views import catalogue_query_views, training_queries
from recindex.train.request import Trained, TrainRequest


def train(request: TrainRequest) -> Trained:
    """SymmAligner: the two-tower towers trained on the task loss and its mirror on swapped inputs."""
    config = request.config
    trainer = SymmetricTrainer(
        request.base,
        request.split,
        config.train,
        config.eval,
        config.sci,
        **request.trainer_options(),
    )
    return Trained(request.base, trainer.fit(), {})


def ci_options(bundle: Bundle, spec: str, options: dict[str, Any]) -> tuple[dict, dict]:
    """The query views of a two-tower bundle's items, for the `ci` index (SCI's consistent index reads
    both towers), and one logged query per training user when its lists cluster them too: (options,
    no search parameters)."""
    found: dict[str, Any] = {
        "query_views": catalogue_query_views(bundle.model),
        "seed": bundle.config.train.seed,
    }
    if "coarse=items+queries" in spec or options.get("coarse") == "items+queries":
        found["logged_queries"] = training_queries(bundle.model, split_for(bundle.config.data, bundle.data))
    return found, {}
