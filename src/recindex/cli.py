"""The `recindex` command line: data | train | index | evaluate | recommend.

User mistakes (bad files, unknown ids, corrupt bundles) print one clear line and exit with status 2;
nothing a user can cause ends in a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recindex.errors import RecIndexError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Retrieval for recommender systems.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and fetch datasets.")
app.add_typer(data_app, name="data")
index_app = typer.Typer(no_args_is_help=True, help="Build and list the item indexes of a bundle.")
app.add_typer(index_app, name="index")
# Tables are wide: when the output is a file or a pipe, do not squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200, emoji=False)
errors = Console(stderr=True, emoji=False)  # no emoji: 'sharded:x:exact' must print as typed

def _print_version(value: bool) -> None:
    if value:
        from recindex import __version__

        console.print(f"recindex {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Retrieval for recommender systems."""


# Where dataset names are looked up (recindex.data.registry.default_data_dir); every help text and the
# README state it in these words.
DATA_DIR_ORDER = "--data-dir, else $RECINDEX_DATA_DIR, else ../shared/data or ./data, whichever exists first"
DATA_DIR = typer.Option(
    None, "--data-dir", help=f"Folder with the datasets. Datasets are read from {DATA_DIR_ORDER}."
)


@data_app.command("stats")
def data_stats(
    dataset: str = typer.Argument(..., help="A name (beauty, ml-100k, synthetic, ...) or a path."),
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Counts, sequence lengths and features of a dataset."""
    from recindex.data.registry import load_dataset

    data = load_dataset(dataset, data_dir)
    lengths = data.lengths()
    counts = data.item_counts()
    table = Table(title=f"dataset {data.name}", show_header=False)
    rows = [
        ("users", f"{data.n_users:,}"),
        ("items", f"{data.n_items:,}"),
        ("interactions", f"{data.n_interactions:,}"),
        ("density", f"{data.n_interactions / max(1, data.n_users * data.n_items):.6f}"),
        (
            "sequence length min / median / mean / max",
            f"{lengths.min()} / {int(np.median(lengths))} / {lengths.mean():.2f} / {lengths.max()}",
        ),
        ("item count min / median / max", f"{counts.min()} / {int(np.median(counts))} / {counts.max()}"),
        ("timestamps", "yes" if data.timestamps is not None else "no"),
        ("item feature tokens", f"{data.item_features.n_tokens:,}" if data.item_features else "none"),
        (
            "user feature fields",
            ", ".join(sorted(data.user_features.codes)) if data.user_features else "none",
        ),
        ("fingerprint", data.fingerprint()[:16]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="beauty, sports, home-kitchen, lastfm or ml-100k."),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Where to put the files (default: $RECINDEX_DATA_DIR, else ./data). "
        f"Datasets are read from {DATA_DIR_ORDER}.",
    ),
) -> None:
    """Fetch a public dataset and verify its checksums."""
    from recindex.data.download import download

    if data_dir is None:
        data_dir = Path(os.environ.get("RECINDEX_DATA_DIR") or "data")
    folder = download(name, data_dir)
    console.print(f"[green]{name}[/] is in {folder}")


@app.command()
def train(
    config: Path | None = typer.Option(
        None, "--config", help="TOML recipe, e.g. configs/beauty_two_tower.toml."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: section.key=value."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
    dataset: str | None = typer.Option(None, "--dataset", help="Name or path; overrides data.dataset."),
    data_dir: Path | None = DATA_DIR,
    seed: int | None = typer.Option(None, "--seed", help="Makes the run repeatable; overrides train.seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    max_time: str | None = typer.Option(
        None,
        "--max-time",
        help="Stop training after this long (e.g. 90s, 30m, 2h; a bare number is seconds) and keep the "
        "best epoch so far; overrides train.max_seconds.",
    ),
) -> None:
    """Train a two-tower model, evaluate it and write a versioned bundle."""
    from recindex.config import load_config
    from recindex.eval.report import metrics_table
    from recindex.pipelines.experiment import run_experiment

    extra = list(overrides)
    if dataset is not None:
        extra.append(f"data.dataset={json.dumps(dataset)}")
    if data_dir is not None:
        extra.append(f"data.data_dir={json.dumps(str(data_dir))}")
    if seed is not None:
        extra.append(f"train.seed={seed}")
    if max_time is not None:
        extra.append(f"train.max_seconds={parse_duration(max_time, '--max-time')}")
    settings = load_config(config, extra)
    result = run_experiment(
        settings, out, progress=not quiet, log=None if quiet else errors.print, overwrite=overwrite
    )
    rows = {"valid": result.valid, "test": result.test}
    title = (
        f"{result.data.name}, {settings.data.split}, full ranking, "
        f"history {'masked' if settings.eval.exclude_seen else 'not masked'}"
    )
    console.print(metrics_table(rows, title))
    stopped = {"patience": " (early stopping)", "time": " (stopped by --max-time)"}
    console.print(
        f"best epoch {result.training.best_epoch} of {result.training.epochs_run}"
        f"{stopped.get(result.training.stopped, '')}, "
        f"training {result.training.seconds:.0f}s; bundle: {result.bundle_path}"
    )


def parse_duration(text: str, flag: str) -> float:
    """'90', '90s', '30m', '1.5h' -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text)
    seconds = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]] if match else 0.0
    if not seconds > 0:
        raise RecIndexError(f"{flag} {text!r}: expected a duration above 0 such as 90s, 30m or 2h")
    return seconds


@app.command()
def evaluate(
    bundle: Path = typer.Argument(..., help="A bundle directory written by 'recindex train'."),
    split: str = typer.Option("test", "--split", help="valid or test."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    exclude_seen: bool = typer.Option(
        True,
        "--exclude-seen/--include-seen",
        help="Mask the user's history from the ranking (the protocol default).",
    ),
    index: str | None = typer.Option(
        None, "--index", help="Retrieve through this index of the bundle (see 'recindex index list')."
    ),
    params: list[str] = typer.Option([], "--param", help="Index search parameter, e.g. ef=256, nprobe=64."),
) -> None:
    """Evaluate a bundle on its own data and split, and compare with the training run."""
    from recindex.eval.report import metrics_table
    from recindex.pipelines import load_bundle
    from recindex.pipelines.experiment import evaluate_bundle

    if split not in ("valid", "test"):
        raise RecIndexError(f"--split must be 'valid' or 'test', got {split!r}")
    loaded = load_bundle(bundle)
    if index is not None:
        _evaluate_through_index(
            loaded, index, split, exclude_seen, parse_assignments(params, "--param"), json_out
        )
        return
    metrics = evaluate_bundle(loaded, split, exclude_seen, progress=True)
    rows = {f"{split} (now)": metrics}
    stored = loaded.metrics.get(split)
    same_setting = loaded.metrics.get("exclude_seen", True) == exclude_seen
    if stored and same_setting:
        rows[f"{split} (training run)"] = stored
    console.print(
        metrics_table(
            rows, f"{loaded.bundle_id}: {split}, history {'masked' if exclude_seen else 'not masked'}"
        )
    )
    if stored and same_setting:
        same = all(metrics.get(k) == v for k, v in stored.items())
        console.print(
            "[green]identical to the training run[/]" if same else "[yellow]differs from the training run[/]"
        )
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "bundle_id": loaded.bundle_id,
                    "split": split,
                    "exclude_seen": exclude_seen,
                    "metrics": metrics,
                },
                indent=2,
            )
        )


def parse_assignments(items: list[str], flag: str) -> dict:
    """`key=value` strings -> dict; values are TOML (numbers, true/false, "quoted"), else plain strings."""
    import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecIndexError(f"{flag} {item!r}: expected key=value, e.g. {flag} ef=256")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def _evaluate_through_index(
    loaded, name: str, split: str, exclude_seen: bool, params: dict, json_out
) -> None:
    from recindex.eval.index_eval import evaluate_index
    from recindex.eval.report import metrics_table
    from recindex.pipelines.indexes import load_bundle_index

    index = load_bundle_index(loaded, name)
    result = evaluate_index(
        loaded, index, split, exclude_seen=exclude_seen, params=params or None, progress=True
    )
    history = "masked" if exclude_seen else "not masked"
    console.print(
        metrics_table(
            {f"index {name}": result.index, "exact": result.exact},
            f"{loaded.bundle_id}: {split}, history {history}",
        )
    )
    table = Table(title=f"index {name} ({index.backend})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("search parameters", json.dumps(index.search_params | params))
    for key, value in result.cost.items():
        table.add_row(key, f"{value:,.4f}" if value < 100 else f"{value:,.0f}")
    console.print(table)
    if json_out is not None:
        payload = {
            "bundle_id": loaded.bundle_id,
            "split": split,
            "exclude_seen": exclude_seen,
            "index": name,
            "search_params": {**index.search_params, **params},
            "metrics": result.index,
            "exact": result.exact,
            "cost": result.cost,
        }
        json_out.write_text(json.dumps(payload, indent=2))


@index_app.command("build")
def index_build(
    bundle: Path = typer.Argument(..., help="A bundle directory written by 'recindex train'."),
    backend: str = typer.Option(
        ...,
        "--backend",
        help="exact, exact:int8, faiss:HNSW32, faiss:IVF1024,Flat, milvus:HNSW, sharded:4:...",
    ),
    name: str | None = typer.Option(
        None, "--name", help="Index name inside the bundle (default: from the spec)."
    ),
    options: list[str] = typer.Option(
        [], "--option", help="Build setting, e.g. ef_construction=200, uri=http://milvus:19530."
    ),
    params: list[str] = typer.Option([], "--param", help="Default search parameter, e.g. ef=128, nprobe=32."),
    metric: str | None = typer.Option(None, "--metric", help="Default: the model's own metric."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an index of the same name."),
) -> None:
    """Build an index over the bundle's item embeddings and store it in the bundle."""
    from recindex.pipelines import load_bundle
    from recindex.pipelines.indexes import build_bundle_index

    loaded = load_bundle(bundle)
    with console.status(f"building {backend} over {len(loaded.item_embeddings):,} items"):
        folder, index, seconds = build_bundle_index(
            loaded,
            backend,
            name,
            metric=metric,
            options=parse_assignments(options, "--option"),
            search_params=parse_assignments(params, "--param"),
            overwrite=overwrite,
        )
    console.print(
        f"[green]built[/] {backend}: {len(index):,} items in {seconds:.1f}s, "
        f"search parameters {index.search_params}; stored in {folder}"
    )


@index_app.command("quality")
def index_quality(
    bundle: Path = typer.Argument(..., help="A bundle directory."),
    index: str = typer.Option(
        ..., "--index", help="An index of the bundle that partitions (mfli, uri, faiss IVF)."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG histogram of bucket sizes here."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
) -> None:
    """How an index partitions the items: APE (users' training items as positives), bucket sizes,
    empty buckets; for URI per layer and with collisions at the leaves; for MFLI, the share of codewords
    in use."""
    from recindex.eval.partition_report import facet_names, plot_bucket_sizes, quality_report
    from recindex.eval.report import codeword_use_line, partition_table
    from recindex.pipelines import load_bundle
    from recindex.pipelines.indexes import load_bundle_index

    loaded = load_bundle(bundle)
    built = load_bundle_index(loaded, index)
    report = quality_report(loaded, built)
    partitions = {name: row for name, row in report.items() if name != "codeword_use"}
    table = partition_table(partitions, f"partition of {index} ({loaded.bundle_id}); APE: lower is tighter")
    console.print(table)
    facets = facet_names(loaded, built)
    if "codeword_use" in report:
        console.print(codeword_use_line(report["codeword_use"]["codeword_use"], facets))
    if plot is not None:
        written = plot_bucket_sizes(built, plot, f"{index} of {loaded.bundle_id}", facets)
        console.print(f"bucket sizes plotted to {written}")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2))


@index_app.command("list")
def index_list(bundle: Path = typer.Argument(..., help="A bundle directory.")) -> None:
    """The indexes stored in a bundle."""
    from recindex.pipelines import load_bundle
    from recindex.pipelines.indexes import list_bundle_indexes

    loaded = load_bundle(bundle)
    table = Table(title=f"indexes of {loaded.bundle_id}")
    for column in ("name", "spec", "items", "metric", "search parameters", "built", "build s"):
        table.add_column(column)
    for m in list_bundle_indexes(loaded):
        table.add_row(
            m["name"],
            m.get("spec", m["backend"]),
            f"{m.get('count', 0):,}",
            m["metric"],
            json.dumps(m.get("search_params", {})),
            m.get("created", ""),
            f"{m.get('build_seconds', 0):.1f}",
        )
    console.print(table)


SERVE_HELP = (
    "Serve a bundle over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs, a web page at /.\n\n"
    "Writes (PUT/DELETE /v1/items, admin calls) need an X-API-Key header holding one of the keys in "
    "RECINDEX_API_KEYS (or api_keys in --settings), comma-separated: RECINDEX_API_KEYS=k1,k2, or a JSON "
    "list: RECINDEX_API_KEYS='[\"k1\",\"k2\"]' (for keys that hold commas). With no keys, writes are "
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
        help="Processes serving reads. Above 1 each holds its own copy of the index, so the service is "
        "read-only (writes and admin answer 503): scale reads this way, write through a single process.",
    ),
    access_log: bool = typer.Option(
        False, "--access-log", help="Print one line per request to stdout: client, request line, status."
    ),
) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn); the help people read is SERVE_HELP."""
    import uvicorn

    from recindex.serve.runtime import WORKER_SETTINGS_ENV, build_app, settings_for, uvicorn_logging

    settings = settings_for(bundle, settings_file, index)
    log_options = uvicorn_logging(access_log)
    if workers == 1:
        api = build_app(settings)
        console.print(f"serving {api.state.recommender.active.bundle_id} on http://{host}:{port}")
        uvicorn.run(api, host=host, port=port, **log_options)
        return
    # uvicorn starts each worker by importing the app, so the settings travel in the environment.
    os.environ[WORKER_SETTINGS_ENV] = settings.model_copy(update={"read_only": True}).model_dump_json()
    console.print(f"serving reads with {workers} workers on http://{host}:{port} (read-only)")
    config = uvicorn.Config(
        "recindex.serve.runtime:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **log_options,
    )
    from uvicorn.supervisors import Multiprocess

    # uvicorn binds a multi-worker socket without naming TCP as its protocol, so asyncio does not set
    # TCP_NODELAY on the connections it accepts, and each keep-alive answer waits ~40 ms on Nagle's
    # algorithm. Bind it here with the protocol named and the option set.
    Multiprocess(config, sockets=[_listening_socket(host, port)]).run()


def _listening_socket(host: str, port: int):
    import socket

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


wal_app = typer.Typer(no_args_is_help=True, help="Check and repair a service's write-ahead log.")
app.add_typer(wal_app, name="wal")


@wal_app.command("repair")
def wal_repair(
    state_dir: Path = typer.Argument(..., help="The service's state folder (its state_dir)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be cut; change nothing."),
) -> None:
    """Repair a log the service refuses to open: keep every record before the damage, move the rest
    aside (to <log>.cut-<time>, never deleted) and list the writes that were cut. Stop the service
    on this folder first (the repair takes its writer lock)."""
    from recindex.serve.wal_repair import describe, repair_log

    report = repair_log(state_dir, dry_run=dry_run)
    for line in describe(report):
        console.print(escape(line), highlight=False)


@app.command()
def openapi() -> None:
    """Print the service's OpenAPI schema (committed as docs/openapi.json)."""
    from recindex.serve.app import openapi_schema

    sys.stdout.write(json.dumps(openapi_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
def recommend(
    bundle: Path = typer.Argument(..., help="A bundle directory."),
    user: str = typer.Option(..., "--user", help="A user id as it appears in the data."),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many items."),
    include_seen: bool = typer.Option(False, "--include-seen", help="Allow items the user already has."),
) -> None:
    """Show a user's history and the items the model retrieves for them."""
    from recindex.pipelines import load_bundle
    from recindex.pipelines.recommend import describe_item, recommend_for_user

    loaded = load_bundle(bundle)
    history, items, scores = recommend_for_user(loaded, user, k, exclude_seen=not include_seen)
    table = Table(title=f"user {user}: history (oldest first)")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("about")
    for position, item in enumerate(history[-20:], start=max(1, len(history) - 19)):
        table.add_row(str(position), *describe_item(loaded.data, int(item)))
    console.print(table)
    table = Table(title=f"top {k} from {loaded.bundle_id}")
    for column in ("rank", "item", "about", "score"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
        table.add_row(str(rank), *describe_item(loaded.data, int(item)), f"{score:.4f}")
    console.print(table)


def main() -> None:
    try:
        app()
    except RecIndexError as error:
        errors.print(f"[red]error:[/] {escape(str(error))}")
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
