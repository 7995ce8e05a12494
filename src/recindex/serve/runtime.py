"""Assemble a running service from settings: the active bundle and its index, the snapshot and the
replayed log (followed, where other processes write it too: see serve.replication), the app."""

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
from recindex.serve.fleet import build_fleet_app
from recindex.serve.items import ItemWriter
from recindex.serve.parent_watch import end_with_supervisor
from recindex.serve.recommender import Recommender, ServingVersion, set_query_device
from recindex.serve.registry import BundleRegistry, load_version
from recindex.serve.replication import ItemLog, LogFollower, add_replication_route, open_log
from recindex.serve.settings import ServiceSettings, load_settings
from recindex.serve.snapshots import Compactor, restore_snapshot
from recindex.serve.state import ACTIVE_FILE, ServiceState
from recindex.serve.state_lock import StateLock

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


def build_app(settings: ServiceSettings, *, worker: bool = False) -> FastAPI:
    """The app for `settings`. `worker`: one of the processes of `serve --workers N`, which all write
    the state folder's log (the supervisor holds its writer lock for them). A service that writes on
    its own (one process; one replica of a JetStream log) holds the state folder's writer lock from
    here until its shutdown (or death), so that no second service can interleave its log."""
    limit_threads(settings.threads)
    set_query_device(settings.device)
    if settings.fleet is not None:  # one replica of a fleet over Milvus: no log, no state folder
        if worker or settings.log is not None or settings.read_only:
            raise RecIndexError("a fleet replica (fleet = NAME) runs as one process, with no log setting")
        return build_fleet_app(settings)
    if worker and settings.log is not None:
        raise RecIndexError("with a JetStream log, run one process per replica (each its own state_dir)")
    lock = None if (settings.read_only or worker) else StateLock(settings.state_dir).acquire()
    try:
        return _service_app(settings, lock, worker)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _service_app(settings: ServiceSettings, lock: StateLock | None, worker: bool) -> FastAPI:
    state = ServiceState(settings.state_dir)
    log = open_log(settings, state)
    if not settings.read_only:
        log.open()
    try:
        writer = load_following(settings, log)
    except BaseException:
        log.close()
        raise
    recommender = Recommender(writer.version)
    # Several processes apply one log: each follows what the others append (a lone writer needs not).
    follows = settings.read_only or worker or settings.log is not None
    follower = LogFollower(writer, lambda: reload_active(settings, writer, recommender)) if follows else None
    writes = not settings.read_only
    registry = None
    if writes:
        alone = not worker and settings.log is None
        registry = BundleRegistry(
            recommender, writer, settings.state_dir, settings.min_index_recall, promotions=alone
        )
    compactor = Compactor(writer, state, settings.compact_every) if writes else None  # also /v1/admin/compact

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if follower is not None:
            follower.start()
        if compactor is not None and settings.compact_every:
            compactor.start()
        try:
            yield
        finally:
            if compactor is not None and settings.compact_every:
                compactor.stop()
            if follower is not None:
                follower.stop()
            log.close()
            if writer.log is not None and writer.log is not log:  # a promotion's new log
                writer.log.close()
            if lock is not None:
                lock.release()

    app = create_app(
        settings,
        recommender,
        writer if writes else None,
        registry,
        compactor=compactor,
        lifespan=lifespan,
    )
    app.state.state_lock = lock
    app.state.follower = follower
    add_replication_route(app, writer, follower)
    return app


def load_following(settings: ServiceSettings, log: ItemLog) -> ItemWriter:
    """The active version with every record the log holds applied: the snapshot (if any) is loaded
    while no compaction can replace it, then the log is read from the sequence it covers."""
    with log.loading():
        version, writer, covered = load_active(settings)
        writer.log, writer.applied = log, covered
        log.start(after=covered)
        writer.sync()
    writer.sync_through(log.head())  # a remote log: wait until what it held at start is applied
    return writer


def reload_active(settings: ServiceSettings, writer: ItemWriter, recommender: Recommender) -> None:
    """Load the state folder's current snapshot into a running writer (its log was compacted past
    the records it had applied: see `LogGap`), and serve it."""
    with writer.lock:
        with writer.log.loading():
            version, fresh, covered = load_active(settings)
        writer.adopt(fresh, covered)
        recommender.active = version


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` process (uvicorn imports it in each worker). The worker ends
    when its supervisor dies, even by SIGKILL (see serve.parent_watch)."""
    end_with_supervisor()
    return build_app(ServiceSettings(**json.loads(os.environ[WORKER_SETTINGS_ENV])), worker=True)
