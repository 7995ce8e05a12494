"""Assemble a running service from settings: the active bundle and its index, the snapshot and the
replayed log, the app."""

from __future__ import annotations

import copy
import json
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from recindex.errors import RecIndexError
from recindex.pipelines import load_bundle
from recindex.serve.app import create_app
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion, set_query_device
from recindex.serve.registry import BundleRegistry, load_version
from recindex.serve.settings import ServiceSettings, load_settings
from recindex.serve.snapshots import Compactor, restore_snapshot
from recindex.serve.state import ACTIVE_FILE, ServiceState
from recindex.serve.state_lock import StateLock
from recindex.serve.wal import WriteAheadLog

WORKER_SETTINGS_ENV = "RECINDEX_WORKER_SETTINGS_JSON"  # how `serve --workers N` hands settings to workers


def load_active(settings: ServiceSettings) -> tuple[ServingVersion, ItemWriter, int]:
    """The version to serve (bundle, then snapshot if any) and a writer holding its changes, before
    the log is replayed; with the log sequence the snapshot covers."""
    state = ServiceState(settings.state_dir)
    record = state.read()  # a promotion or compaction chose the bundle: it wins over the configured one
    bundle_path, index = (
        (record["bundle"], record.get("index")) if record else (settings.bundle, settings.index)
    )
    if bundle_path is None:
        raise RecIndexError("no bundle to serve: pass BUNDLE, set RECINDEX_BUNDLE, or bundle= in --settings")
    snapshot = state.snapshot_path(record)
    if snapshot is None:
        version = load_version(bundle_path, index)
        return version, ItemWriter(version, None), 0
    source = {"bundle": str(bundle_path), "index": index}
    version, writer, seq = restore_snapshot(load_bundle(bundle_path), snapshot, source)
    return version, writer, seq


def settings_for(target: Path | None, settings_file: Path | None, index: str | None) -> ServiceSettings:
    """Settings for `recindex serve TARGET`: TARGET is a bundle, or a state directory (one holding
    active.json), which names the bundle it serves."""
    if target is not None and (Path(target) / ACTIVE_FILE).is_file():
        return load_settings(settings_file, state_dir=target, index=index)
    return load_settings(settings_file, bundle=target, index=index)


def uvicorn_logging(access_log: bool) -> dict:
    """uvicorn's logging options for `recindex serve`: its own messages from warnings up, and with
    `access_log` one line per request on stdout (client, request line, status), as uvicorn writes it."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    config["loggers"]["uvicorn.access"]["level"] = "INFO"  # its records are INFO
    return {"log_config": config, "log_level": None, "access_log": access_log}


def limit_threads(threads: int) -> None:
    """Size the numeric libraries' thread pools for serving (see `ServiceSettings.threads`)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # BLAS and OpenMP (numpy's and FAISS's), for the whole process
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def build_app(settings: ServiceSettings) -> FastAPI:
    """The app for `settings`. A writing service (not `read_only`) holds the state folder's writer
    lock from here until its shutdown (or death), so that no second writer can interleave its log."""
    limit_threads(settings.threads)
    set_query_device(settings.device)
    if settings.read_only:  # a worker of several: replays the log, never writes it
        version, writer, covered = load_active(settings)
        state = ServiceState(settings.state_dir)
        log = WriteAheadLog(state.log_path(state.read()))
        _check_log_bundle(log, version)
        writer.replay_records(log.records(covered))
        return create_app(settings, Recommender(writer.version))
    lock = StateLock(settings.state_dir).acquire()  # before reading anything another writer could change
    try:
        return _writing_app(settings, lock)
    except BaseException:
        lock.release()
        raise


def _writing_app(settings: ServiceSettings, lock: StateLock) -> FastAPI:
    version, writer, covered = load_active(settings)
    state = ServiceState(settings.state_dir)
    log = WriteAheadLog(state.log_path(state.read())).open()
    _check_log_bundle(log, version)
    writer.log = log
    writer.replay(after=covered)
    recommender = Recommender(writer.version)
    registry = BundleRegistry(recommender, writer, settings.state_dir, settings.min_index_recall)
    compactor = Compactor(writer, state, settings.compact_every)  # also serves POST /v1/admin/compact

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.compact_every:
            compactor.start()
        try:
            yield
        finally:
            if settings.compact_every:
                compactor.stop()
            log.close()
            if writer.log is not None:  # a promotion's new log
                writer.log.close()
            lock.release()

    app = create_app(settings, recommender, writer, registry, compactor=compactor, lifespan=lifespan)
    app.state.state_lock = lock
    return app


def _check_log_bundle(log: WriteAheadLog, version: ServingVersion) -> None:
    foreign = {r.get("bundle_id") for r in log.records()} - {version.bundle_id}
    if foreign:
        log.close()
        raise RecIndexError(
            f"{log.path} holds item changes made under bundle {sorted(foreign)[0]!r}, "
            f"not {version.bundle_id!r}: serve that bundle, or use another state_dir"
        )


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` process (uvicorn imports it in each worker)."""
    return build_app(ServiceSettings(**json.loads(os.environ[WORKER_SETTINGS_ENV])))
