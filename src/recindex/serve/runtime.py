"""Assemble a running service from settings: the active bundle and its index, the replayed log, the app."""

from __future__ import annotations

import json

from fastapi import FastAPI

from recindex.errors import RecIndexError
from recindex.serve.app import create_app
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender
from recindex.serve.registry import BundleRegistry, load_version
from recindex.serve.settings import ServiceSettings
from recindex.serve.wal import WriteAheadLog


def build_app(settings: ServiceSettings) -> FastAPI:
    bundle, index = settings.bundle, settings.index
    active_file = settings.state_dir / "active.json"
    if active_file.is_file():  # a promotion chose the bundle: it wins over the configured one
        chosen = json.loads(active_file.read_text(encoding="utf-8"))
        bundle, index = chosen["bundle"], chosen.get("index")
    if bundle is None:
        raise RecIndexError("no bundle to serve: pass BUNDLE, set RECINDEX_BUNDLE, or bundle= in --settings")
    version = load_version(bundle, index)
    log = WriteAheadLog(settings.state_dir / "items.wal").open()
    foreign = {r.get("bundle_id") for r in log.records()} - {version.bundle_id}
    if foreign:
        log.close()
        raise RecIndexError(
            f"{log.path} holds item changes made under bundle {sorted(foreign)[0]!r}, "
            f"not {version.bundle_id!r}: serve that bundle, or use another state_dir"
        )
    writer = ItemWriter(version, log)
    writer.replay()
    recommender = Recommender(version)
    registry = BundleRegistry(recommender, writer, settings.state_dir, settings.min_index_recall)
    return create_app(settings, recommender, writer, registry)
