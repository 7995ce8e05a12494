"""`recindex serve`, `recindex wal repair` and `recindex openapi`: the service's commands."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import typer
import uvicorn
from rich.markup import escape
from uvicorn.supervisors import Multiprocess

from recindex.cli.app import app, console, wal_app
from recindex.serve.app import openapi_schema
from recindex.serve.runtime import WORKER_SETTINGS_ENV, build_app, settings_for, uvicorn_logging
from recindex.serve.state_lock import StateLock
from recindex.serve.wal_repair import describe, repair_log

SERVE_HELP = (
    "Serve a bundle over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs, a web page at /.\n\n"
    "Writes (PUT/DELETE /v1/items, admin calls) need an X-API-Key header holding one of the keys in "
    "RECINDEX_API_KEYS (or api_keys in --settings), comma-separated: RECINDEX_API_KEYS=k1,k2, or a JSON "
    'list: RECINDEX_API_KEYS=\'["k1","k2"]\' (for keys that hold commas). With no keys, writes are '
    "closed.\n\n"
    "One writing service per state folder (RECINDEX_STATE_DIR, default ./recindex_state); a log it "
    "refuses is repaired with 'recindex wal repair STATE_DIR'."
)


@app.command(help=SERVE_HELP)
def serve(
    bundle: Path | None = typer.Argument(
        None,
        help="A bundle to serve, or a service state directory (it names the bundle it serves); "
        "else RECINDEX_BUNDLE / settings.",
    ),
    index: str | None = typer.Option(None, "--index", help="Index of the bundle; default: exact search."),
    settings_file: Path | None = typer.Option(
        None,
        "--settings",
        help="TOML file of service settings; RECINDEX_* environment variables override it "
        "(see docs/service.md).",
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Processes serving the bundle. Each holds its own copy of the index; all of them take writes, "
        "which go through the state folder's log in one order, and each applies every write (bundle "
        "staging and promotion need one process).",
    ),
    access_log: bool = typer.Option(
        False, "--access-log", help="Print one line per request to stdout: client, request line, status."
    ),
) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn); the help people read is SERVE_HELP."""
    settings = settings_for(bundle, settings_file, index)
    log_options = uvicorn_logging(access_log)
    if workers == 1:
        api = build_app(settings)
        console.print(f"serving {api.state.recommender.active.bundle_id} on http://{host}:{port}")
        uvicorn.run(api, host=host, port=port, **log_options)
        return
    if settings.log is not None:
        raise typer.BadParameter(
            "with a JetStream log (log = nats://...) each process is one replica: start one per state_dir",
            param_hint="--workers",
        )
    # The workers write the state folder's log together (each append under its flock); the folder's
    # writer lock, which keeps a second service off it, is held here for all of them.
    lock = None
    if not settings.read_only:
        lock = StateLock(settings.state_dir, f"recindex serve --workers {workers}").acquire()
    # uvicorn starts each worker by importing the app, so the settings travel in the environment.
    os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
    mode = "read-only" if settings.read_only else "all taking writes"
    console.print(f"serving with {workers} workers on http://{host}:{port} ({mode})")
    config = uvicorn.Config(
        "recindex.serve.runtime:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **log_options,
    )
    # uvicorn binds a multi-worker socket without naming TCP as its protocol, so asyncio does not set
    # TCP_NODELAY on the connections it accepts, and each keep-alive answer waits ~40 ms on Nagle's
    # algorithm. Bind it here with the protocol named and the option set.
    try:
        Multiprocess(config, sockets=[_listening_socket(host, port)]).run()
    finally:
        if lock is not None:
            lock.release()


def _listening_socket(host: str, port: int):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


@wal_app.command("repair")
def wal_repair(
    state_dir: Path = typer.Argument(..., help="The service's state folder (its state_dir)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be cut; change nothing."),
) -> None:
    """Repair a log the service refuses to open: keep every record before the damage, move the rest
    aside (to <log>.cut-<time>, never deleted) and list the writes that were cut. Stop the service
    on this folder first (the repair takes its writer lock)."""
    report = repair_log(state_dir, dry_run=dry_run)
    for line in describe(report):
        console.print(escape(line), highlight=False)


@app.command()
def openapi() -> None:
    """Print the service's OpenAPI schema (committed as docs/openapi.json)."""
    sys.stdout.write(json.dumps(openapi_schema(), indent=2, sort_keys=True) + "\n")
