"""`recindex index`: build, list and inspect the indexes stored in a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from recindex.cli.app import console, index_app
from recindex.cli.parsing import parse_assignments
from recindex.cli.present import index_list_table
from recindex.errors import BundleError, InvalidRequest
from recindex.eval.partition_report import facet_names, plot_bucket_sizes, quality_report
from recindex.eval.report import codeword_use_line, partition_table
from recindex.index.specs import recommended_faiss
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import (
    CheckSettings,
    build_bundle_index,
    config_spec,
    list_bundle_indexes,
    load_bundle_index,
)
from recindex.pipelines.self_check import advice


@index_app.command("build")
def index_build(
    bundle: Path = typer.Argument(..., help="A bundle directory written by 'recindex train'."),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="exact, exact:int8, faiss:HNSW32, faiss:IVF1024,Flat, faiss:IVF2048,PQ64x4fsr,RFlat (recommended"
        " at 1M items, d=64), milvus:HNSW, sharded:4:..., mfli, uri, ci:nlist=128 (default: the bundle "
        "config's \\[index])",
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
    check_queries: int | None = typer.Option(
        None,
        "--check-queries",
        min=0,
        max=100_000,
        help="Validation users the build's self-check searches (0: no check; default 500).",
    ),
    warn_recall: float | None = typer.Option(
        None,
        "--warn-recall",
        min=0.0,
        max=1.0,
        help="Index recall@100 below which the build warns and suggests a parameter (default 0.9).",
    ),
    min_recall: float | None = typer.Option(
        None,
        "--min-recall",
        min=0.0,
        max=1.0,
        help="Index recall@100 below which the build fails and stores nothing.",
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Build from the shards 'recindex embed' wrote for this bundle there."
    ),
) -> None:
    """Build an index over the bundle's item embeddings and store it in the bundle: the `--backend`
    spec, or else the one the bundle's config names in \\[index]. Then check it: search a sample of the
    bundle's validation users with the stored parameters, compare with exact search and print index
    recall@10 and @100, candidates scored and latency (kept in the index manifest, shown by 'recindex
    index list'); below --warn-recall it warns and names the parameter value that reaches it."""
    loaded = load_bundle(bundle)
    check = CheckSettings.of(
        loaded.config.index, queries=check_queries, warn_recall=warn_recall, min_recall=min_recall
    )
    spec, search = backend, parse_assignments(params, "--param")
    if spec is None:
        spec = _configured_spec(loaded)
        search = {**loaded.config.index.search, **search}
        console.print(escape(f"building the bundle config's [index]: {spec.text()}"))
    shown = spec if isinstance(spec, str) else spec.text()
    source = f"the vectors in {embeddings}" if embeddings else f"{len(loaded.item_embeddings):,} items"
    with console.status(f"building {shown} over {source}, then checking it"):
        folder, index, seconds, checked = build_bundle_index(
            loaded,
            spec,
            name,
            metric=metric,
            options=parse_assignments(options, "--option"),
            search_params=search,
            overwrite=overwrite,
            check=check,
            embeddings=embeddings,
        )
    console.print(
        escape(
            f"built {shown}: {len(index):,} items in {seconds:.1f}s, "
            f"search parameters {index.search_params}; stored in {folder}"
        )
    )
    if checked is not None:
        console.print(escape("self-check: " + checked.summary()))
        if checked.recall_at_k < check.warn_recall:
            console.print("[yellow]warning:[/] " + escape(advice(checked, check.warn_recall)))


def _configured_spec(loaded):
    """The typed spec of the bundle config's [index], or a BundleError that says how to give one."""
    try:
        spec = config_spec(loaded.config.index)
    except InvalidRequest as error:
        raise InvalidRequest(f"{loaded.path}/manifest.json [index]: {error}") from None
    if spec is None:
        items, dim = loaded.item_embeddings.shape
        suggested = recommended_faiss(items, dim) if items >= 39 else "faiss:HNSW32"
        raise BundleError(
            f"{loaded.path}: its config has no [index] backend; pass --backend SPEC "
            f"(recommended for its {items:,} items: --backend {suggested}, docs/indexes.md), or train "
            'with [index] backend = "..."'
        )
    return spec


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
    loaded = load_bundle(bundle)
    console.print(index_list_table(loaded, list_bundle_indexes(loaded)))
