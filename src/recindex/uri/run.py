"""One URI (or two-stage generative) training run: encoders, decoder and index, ranker.

encoders   from `uri.init_from` (a two-tower bundle of the same data and split), or trained first
index      URI: learned layer by layer by the decoder; two-stage: fixed codes, which the decoder then
           learns by cross-entropy. The fixed codes come from a function the composition root passes
           (`uri.index`: random, k-means, RQ-KMeans, RQ-VAE of the encoders' item vectors, SCI's
           consistent-index codes of both towers' views, or another URI bundle's learned codes)
ranker     the towers fine-tuned with random and sibling-leaf negatives
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from recindex.bundle import Bundle
from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.errors import RecIndexError
from recindex.models.devices import resolve_device
from recindex.models.two_tower import TwoTowerModel
from recindex.models.warm_start import load_towers
from recindex.train.loop import Trainer, TrainResult
from recindex.train.request import Trained, TrainRequest
from recindex.uri.checkpoint import URICheckpoints, resumed_decoder
from recindex.uri.model import URIModel, uri_model
from recindex.uri.ranker import RankerTrainer, ranker_train_config
from recindex.uri.ranks import DecoderRanks
from recindex.uri.train import DecoderTrainer, with_item_token

# (router towers) -> (N, layers) tokens of a fixed index, for a two-stage baseline
FixedCodes = Callable[[TwoTowerModel], np.ndarray]


def train(request: TrainRequest, fixed_codes: FixedCodes | None) -> Trained:
    """URI when `fixed_codes` is None, else the two-stage baseline on those codes."""
    model, record = train_uri(request, fixed_codes)
    training = TrainResult(
        best_epoch=record["ranker"]["best_epoch"],
        epochs_run=record["ranker"]["epochs_run"],
        seconds=sum(part.get("seconds", 0.0) for part in record.values()),
        history=record["ranker"]["history"],
    )
    return Trained(model, training, record)


def train_uri(request: TrainRequest, fixed_codes: FixedCodes | None) -> tuple[URIModel, dict]:
    """Train every part; returns the model and what to record of the training. With checkpoints, a
    resumed run skips the stages its checkpoint was written after (see `uri.checkpoint`)."""
    config, data, split, progress = request.config, request.data, request.split, request.progress
    log = request.log or (lambda _: None)
    context = request.distributed  # under torchrun: every part below trains data-parallel
    device = resolve_device(config.train.device, context.local_rank if context.active else None)
    checkpoints = URICheckpoints.of(request.checkpoints) if request.checkpoints is not None else None
    stage = checkpoints.resumed_stage() if checkpoints is not None else None
    saved = checkpoints.load()["uri"] if stage in ("decoder", "ranker") else None
    options = {"progress": progress, "log": log, "checkpoints": checkpoints}  # every stage's trainer's
    uri = config.uri
    # A fresh router, drawn after the composition root's base towers: the draws every URI run has made.
    router = TwoTowerModel.for_data(data, config.model)
    record: dict = saved["record"] if saved is not None else {}
    trains_encoders = request.load_start is None and saved is None
    if request.load_start is not None:
        load_towers(router, request.load_start(), data, config.data, log, setting="uri.init_from")
        router.set_trained_items(split.train_item_mask(data.n_items))
    elif trains_encoders:
        log("encoders: training a two-tower model first (set uri.init_from to reuse one)")
        towers = Trainer(router, split, config.train, config.eval, distributed=context, **options).fit()
        record["encoders"] = {"best_epoch": towers.best_epoch, "seconds": towers.seconds}
    router.eval()
    ranks = DecoderRanks(context, device)
    if saved is not None:  # the model as the checkpoint's stage found it (the index's codes included)
        model = uri_model(router, uri, saved["sizes"]).to(device)
        model.load_state_dict(saved["model"])
    else:
        model = _new_model(router, uri, fixed_codes, ranks, device)
    if stage != "ranker":
        if checkpoints is not None:
            checkpoints.enter("decoder", model, record)
            if trains_encoders:
                checkpoints.stage_ended(context.main)
        resumed = resumed_decoder(checkpoints.load()) if stage == "decoder" else None
        decoder = DecoderTrainer(
            model, split, uri, seed=config.train.seed, ranks=ranks, resumed=resumed, **options
        )
        record["decoder"] = _train_decoder(decoder, uri, fixed_codes is not None, log)
        record["ranker"] = {"best_epoch": 0, "epochs_run": 0, "seconds": 0.0, "history": []}
        if checkpoints is not None:
            checkpoints.enter("ranker", model, record)
            checkpoints.stage_ended(context.main)
    elif checkpoints is not None:
        checkpoints.enter("ranker", model, record)
        checkpoints.resume_ranker()
    if uri.ranker_epochs > 0:
        ranker_config = ranker_train_config(config.train, uri)
        ranker = RankerTrainer(
            model, split, ranker_config, config.eval, uri, distributed=context, **options
        ).fit()
        record["ranker"] = {
            "best_epoch": ranker.best_epoch,
            "epochs_run": ranker.epochs_run,
            "seconds": ranker.seconds,
            "history": ranker.history,
        }
    model.eval()
    return model, record


def _train_decoder(decoder: DecoderTrainer, uri, two_stage: bool, log) -> dict:
    """The decoder learns its index (URI) or the fixed one (two-stage); what to record of it."""
    if two_stage:
        log(f"two-stage: the decoder learns the fixed {uri.index!r} index by cross-entropy")
        trained = decoder.fit_fixed(uri.layer_epochs)
    else:
        log(f"URI: learning a {uri.layers}-layer index of {uri.k} tokens per layer")
        trained = decoder.fit_uri()
    return {"seconds": trained.seconds, "history": trained.history}


def _new_model(router: TwoTowerModel, uri, fixed_codes: FixedCodes | None, ranks: DecoderRanks, device):
    """The URI model around the trained router; a two-stage one holds its fixed index's codes."""
    if fixed_codes is None:
        return uri_model(router, uri).to(device)
    codes, sizes = index_codes(uri, router, fixed_codes, ranks)
    model = uri_model(router, uri, sizes).to(device)
    model.item_codes.copy_(torch.as_tensor(codes))  # copy_ crosses devices
    return model


def index_codes(uri, router: TwoTowerModel, fixed_codes: FixedCodes, ranks: DecoderRanks):
    """(N, L[+1]) codes of a two-stage index and the decoder's token sizes."""
    codes = fixed_codes(router)
    if codes.shape[1] != uri.layers or codes.max() >= uri.k:
        raise RecIndexError(
            f"{uri.index}: its index has {codes.shape[1]} layers of up to {int(codes.max()) + 1} tokens; "
            f"this run asks for uri.layers={uri.layers}, uri.k={uri.k}"
        )
    # Under torchrun every rank fits the index (so its random draws stay one process's) and rank 0's
    # codes replace the others': a fit need not be bit-identical across processes, and the ranks must
    # learn one index. The item token below is then computed alike everywhere.
    codes = ranks.agreed(codes)
    sizes = [uri.k] * uri.layers
    if uri.generate_items:
        codes, width = with_item_token(codes, uri.k)
        sizes.append(width)
    return codes, sizes


def learned_codes(bundle: Bundle, data: Interactions, config: ExperimentConfig) -> np.ndarray:
    """A URI bundle's learned index, for a two-stage baseline "w/ URI index" on the same split."""
    if not isinstance(bundle.model, URIModel) or bundle.config.uri.index != "learn":
        raise RecIndexError(f"{bundle.path}: not a URI bundle with a learned index")
    if bundle.data.fingerprint() != data.fingerprint() or dataclasses.replace(
        bundle.config.data, data_dir=None
    ) != dataclasses.replace(config.data, data_dir=None):
        raise RecIndexError(f"{bundle.path}: trained on other data or another split than this run's")
    return bundle.model.item_codes[:, : bundle.config.uri.layers].numpy().copy()
