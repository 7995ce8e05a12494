"""Rich tables of metrics, shared by the CLI and the benchmarks."""

from __future__ import annotations

from rich.table import Table

HEADLINE = (
    "recall@5",
    "recall@10",
    "recall@20",
    "recall@50",
    "recall@100",
    "ndcg@10",
    "ndcg@20",
    "mrr",
    "coverage@10",
    "popularity@10",
    "gini@10",
)


def metrics_table(rows: dict[str, dict[str, float]], title: str, keys: tuple[str, ...] = HEADLINE) -> Table:
    """One row per run (e.g. 'valid', 'test'), one column per metric present in any row."""
    present = [k for k in keys if any(k in r for r in rows.values())]
    extra = sorted(
        {k for r in rows.values() for k in r if k.startswith("cold_recall@")},
        key=lambda k: int(k.split("@")[1]),
    )
    table = Table(title=title)
    table.add_column("run", style="bold")
    for key in [*present, *extra]:
        table.add_column(key, justify="right")
    for name, values in rows.items():
        cells = []
        for key in [*present, *extra]:
            value = values.get(key)
            cells.append(
                "-" if value is None else (f"{value:.1f}" if key.startswith("popularity") else f"{value:.4f}")
            )
        table.add_row(name, *cells)
    return table


def partition_table(rows: dict[str, dict[str, float]], title: str) -> Table:
    """One row per partition (eval.partition_report / eval.ape.bucket_report fields and its APE)."""
    table = Table(title=title)
    columns = (
        "partition",
        "APE",
        "buckets used",
        "empty",
        "size p50",
        "size p90",
        "size max",
        "largest share",
        "collisions",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "partition" else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['ape']:.3f}",
            *(f"{row[key]:,.0f}" for key in ("used", "empty", "size_p50", "size_p90", "size_max")),
            f"{row['largest_share']:.3f}",
            f"{row['collisions']:,.0f}" if "collisions" in row else "-",
        )
    return table


def codeword_use_line(use: list[list[float]], facets: list[str]) -> str:
    """MFLI's share of codewords in use, (levels x facets), as one line naming the facets."""
    levels = (
        f"level {i + 1}: " + ", ".join(f"{name} {u:.0%}" for name, u in zip(facets, level, strict=True))
        for i, level in enumerate(use)
    )
    return "codewords in use: " + "; ".join(levels)
