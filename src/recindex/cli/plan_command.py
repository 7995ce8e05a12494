"""`recindex plan`: what an index of N items of dimension D takes (RAM, disk, build time), and which
backend to use."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from recindex.cli.app import app, console
from recindex.index.build_time import RATES_FILE, RateTable
from recindex.index.planning import FIT_FRACTION, Plan, Sized, gb, plan


@app.command("plan")
def plan_command(
    items: int = typer.Option(..., "--items", help="Items the index will hold."),
    dim: int = typer.Option(..., "--dim", help="Dimension of the item vectors."),
    index: str | None = typer.Option(
        None, "--index", help="Also size this spec, e.g. faiss:HNSW32, faiss:IVF4096,PQ16, sharded:4:exact."
    ),
    ram: float | None = typer.Option(
        None, "--ram", help="GB of RAM the index may use (default: this machine's available memory)."
    ),
    attributes: list[str] = typer.Option(
        [], "--attribute", help="A filter attribute column: str, num, bool or str_list:W (repeatable)."
    ),
    rates: Path = typer.Option(RATES_FILE, "--rates", help="Table of measured build rates."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Bytes per item, total RAM (vectors or codes, index structure, id tables, attributes), disk, a
    build time extrapolated from a measured table, and the recommended backend with its reason
    (exact, HNSW, IVF-PQ, IVF-PQ with its lists on disk, or a Milvus cluster)."""
    result = plan(items, dim, index=index, ram_gb=ram, attributes=attributes, rates=RateTable.load(rates))
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    print_plan(result)


def print_plan(result: Plan) -> None:
    table = Table(
        title=f"{result.items:,} items x {result.dim} dims; RAM {gb(result.ram)} ({result.ram_source}), "
        f"an index fits in {FIT_FRACTION:.0%} of it"
    )
    for column in ("backend", "bytes/item", "RAM", "peak (build)", "on disk", "build (est.)", "fits"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    rows = [*result.candidates, *([result.requested] if result.requested else [])]
    for sized in rows:
        name = escape(sized.spec) + (" (requested)" if sized is result.requested else "")
        if sized.spec == result.recommended:
            name = f"[bold]{name} *[/]"
        table.add_row(
            name,
            f"{sized.footprint.ram_per_item():,.1f}",
            gb(sized.footprint.ram()),
            gb(sized.footprint.build_peak()),
            gb(sized.footprint.disk()) if sized.footprint.disk() else "-",
            _build(sized),
            "yes" if sized.fits else "no",
        )
    if result.recommended == "milvus":
        table.add_row("[bold]milvus (a cluster) *[/]", "-", "on the servers", "-", "-", "-", "-")
    console.print(table)
    console.print(f"[bold]recommended:[/] {escape(result.recommended)}: {escape(result.reason)}")
    shown = result.requested or next((c for c in result.candidates if c.spec == result.recommended), None)
    if shown is not None:
        console.print(_parts(shown, result.items))
    if result.rates is not None:
        machine = result.rates.machine
        console.print(
            "build times: an extrapolation (work units x seconds per unit) from builds measured on "
            f"{escape(str(machine.get('cpu_model') or 'an unnamed CPU'))}, {machine.get('cpu_count')} CPUs, "
            f"{escape(str(machine.get('date', '')))}, {result.rates.threads} thread "
            f"({escape(result.rates.command)}); the range is the spread of the measured rates"
        )
    for note in result.notes:
        console.print(escape(note))


def _parts(sized: Sized, items: int) -> Table:
    table = Table(title=f"{escape(sized.spec)}: where the bytes go")
    for column in ("part", "bytes/item", "fixed", "total", "where"):
        table.add_column(column, justify="left" if column in ("part", "where") else "right")
    for part in sized.footprint.parts:
        if part.where == "saved":
            continue
        table.add_row(
            escape(part.name),
            f"{part.per_item:,.1f}" if part.per_item else "-",
            gb(part.fixed) if part.fixed else "-",
            gb(part.total(items)),
            "RAM" if part.where == "ram" else "disk (mapped)",
        )
    return table


def _build(sized: Sized) -> str:
    if sized.build is None:
        return "not measured"
    return f"{_duration(sized.build.seconds)} ({_duration(sized.build.low)}-{_duration(sized.build.high)})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
