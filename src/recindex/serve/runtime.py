"""Assemble a running service from settings: load the bundle and its index, build the app."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI

from recindex.bundle import load_bundle
from recindex.errors import RecIndexError
from recindex.index.exact_index import ExactIndex
from recindex.index.in_bundle import item_attributes, load_bundle_index
from recindex.serve.app import create_app
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings
from recindex.serve.wal import WriteAheadLog


def build_app(settings: ServiceSettings) -> FastAPI:
    if settings.bundle is None:
        raise RecIndexError("no bundle to serve: pass BUNDLE, set RECINDEX_BUNDLE, or bundle= in --settings")
    bundle = load_bundle(settings.bundle)
    if settings.index is not None:
        index = load_bundle_index(bundle, settings.index)
    else:  # exact search over the bundle's own item vectors
        index = ExactIndex(bundle.item_embeddings.shape[1], bundle.manifest["embedding"]["metric"])
        index.add(
            np.arange(len(bundle.item_embeddings)),
            bundle.item_embeddings,
            attributes=item_attributes(bundle.data),
        )
    version = ServingVersion.of(bundle, index)
    log = WriteAheadLog(settings.state_dir / "items.wal").open()
    foreign = {r.get("bundle_id") for r in log.records()} - {bundle.bundle_id}
    if foreign:
        log.close()
        raise RecIndexError(
            f"{log.path} holds item changes made under bundle {sorted(foreign)[0]!r}, "
            f"not {bundle.bundle_id!r}: serve that bundle, or use another state_dir"
        )
    writer = ItemWriter(version, log)
    writer.replay()
    return create_app(settings, Recommender(version), writer)
